#!/usr/bin/env bash
# Install the npm dependencies of the test-only SMART EHR (tests/smart_ehr) from package-lock.json.
# Needs Node.js 20.12 or later with npm. Safe to run again: `npm ci` reinstalls node_modules.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "tests/smart_ehr/setup.sh: node and npm are required (Node.js 20.12 or later)" >&2
  exit 1
fi
npm ci --no-audit --no-fund
version=$(node -p "require('./node_modules/oidc-provider/package.json').version")
node --input-type=module -e "await import('oidc-provider')" 2>/dev/null || {
  echo "tests/smart_ehr/setup.sh: oidc-provider ${version} does not load with node $(node --version)" >&2
  exit 1
}
echo "tests/smart_ehr: oidc-provider ${version} installed for node $(node --version)"
