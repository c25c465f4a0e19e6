#!/usr/bin/env bash
# Offline FHIR R4 validator (HAPI FHIR 8.8.0 validation), no network, no terminology server.
#
#   tests/fhir_validator/validate.sh --ig fhir_profiles [--ig DIR]... [--profile URL]... FILE...
#   tests/fhir_validator/validate.sh --ig fhir_profiles --stdin     (one input per line, one answer per line)
#   tests/fhir_validator/validate.sh build                          (resolve and compile only)
#   tests/fhir_validator/validate.sh snapshot --ig fhir_profiles [--check] FILE...
#                                   (write each StructureDefinition's snapshot from its differential;
#                                    --check only reports stale ones, exit 1)
#
# Prints one JSON line per input on stdout:
#   {"file": PATH, "valid": BOOL, "errors": N, "warnings": N, "outcome": {OperationOutcome}}
# Exit status: 0 all valid, 1 any error-severity issue or unreadable file, 2 usage error.
# The first run downloads HAPI's validation jars (cached in ~/.m2); build output goes to stderr.
#
# Environment: VALIDATOR_JAVA_OPTS (JVM options), MAVEN_ARGS_EXTRA (extra mvn arguments).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TARGET="$HERE/target"
CLASSPATH_FILE="$TARGET/classpath.txt"
STAMP="$TARGET/build.stamp"
# Short runs: the C1 compiler alone starts faster; a 1 GiB heap holds the R4 core definitions.
JAVA_OPTS="${VALIDATOR_JAVA_OPTS:--Xmx1g -XX:+UseSerialGC -XX:TieredStopAtLevel=1}"

log() { printf 'validate.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 2; }

# shellcheck source=SCRIPTDIR/../java-build.sh
source "$HERE/../java-build.sh"

build() {
	require java mvn
	is_built && return 0
	maven_build "the validator (a first run downloads ~190 MB into the Maven repository)"
}

if [[ "${1:-}" == "build" ]]; then
	require java mvn
	if is_built; then
		log "build is up to date ($TARGET)"
	else
		build
	fi
	exit 0
fi

build
# shellcheck disable=SC2086  # JAVA_OPTS is a list of words on purpose
exec java $JAVA_OPTS -cp "$TARGET/classes:$(cat "$CLASSPATH_FILE")" \
	org.referraladapter.validator.ValidateCli "$@"
