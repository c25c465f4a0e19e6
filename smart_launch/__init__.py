"""The SMART-on-FHIR launch view: the work queue a coordinator opens inside the EHR.

Not built yet (issue 6). The package exists so the project layout matches DESIGN.md.
"""
