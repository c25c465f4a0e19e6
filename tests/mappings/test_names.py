from mappings.names import display_name


def test_a_name_text_wins_over_its_parts() -> None:
    body = {"name": [{"text": "Ada Sorrel", "given": ["A."], "family": "S"}]}
    assert display_name(body) == "Ada Sorrel"


def test_given_and_family_of_the_first_usable_name() -> None:
    body = {"name": ["junk", {"text": "  "}, {"given": ["Dov", 3], "family": "Sorrel"}]}
    assert display_name(body) == "Dov Sorrel"


def test_an_organizations_name_and_no_name_at_all() -> None:
    assert display_name({"name": "Northside Family Medicine"}) == "Northside Family Medicine"
    assert display_name({"name": " "}) is None
    assert display_name({"name": [{"use": "official"}]}) is None
    assert display_name({}) is None
