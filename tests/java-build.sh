# shellcheck shell=bash
# Shared by tests/hapi/hapi.sh and tests/fhir_validator/validate.sh; sourced, not run.
# Builds a small Maven project's classes and classpath file once (dependencies cached in ~/.m2)
# and tells whether that build is still up to date. The caller sets HERE (the project folder),
# TARGET, CLASSPATH_FILE and STAMP, and defines log and die.

# Fail unless each tool is on PATH.
require() {
	local tool
	for tool in "$@"; do
		command -v "$tool" >/dev/null 2>&1 || die "'$tool' not found on PATH (needs Java 17+, Maven 3.8+, curl)"
	done
}

# True when the classes and the classpath file are newer than the pom and every source, and
# every jar the classpath names is still in the local Maven repository.
is_built() {
	[[ -f "$STAMP" && -f "$CLASSPATH_FILE" ]] || return 1
	[[ -n "$(find "$HERE/pom.xml" "$HERE/src" -newer "$STAMP" -print -quit)" ]] && return 1
	local entry
	local -a entries
	IFS=: read -r -a entries <"$CLASSPATH_FILE"
	for entry in "${entries[@]}"; do
		[[ -e "$entry" ]] || return 1
	done
	return 0
}

# Compile and write the classpath file, offline first (quick and quiet when all is cached),
# online with Maven's own output when something is missing. $1 names what is built.
maven_build() {
	local -a goals=(compile dependency:build-classpath "-Dmdep.outputFile=$CLASSPATH_FILE")
	log "building $1"
	# shellcheck disable=SC2086  # MAVEN_ARGS_EXTRA is a list of words on purpose
	if ! mvn -B -q -o -Dstyle.color=never -f "$HERE/pom.xml" ${MAVEN_ARGS_EXTRA:-} "${goals[@]}" >/dev/null 2>&1; then
		# shellcheck disable=SC2086
		mvn -B -q -Dstyle.color=never -f "$HERE/pom.xml" ${MAVEN_ARGS_EXTRA:-} "${goals[@]}" >&2 || die "maven build failed"
	fi
	touch "$STAMP"
	log "built ($TARGET)"
}
