#!/usr/bin/env bash
# CI: install the pinned toolchain, run the client's tests, rebuild the bundle
# and fail if it differs from the committed src/ipcbus/web/static/.
set -euo pipefail
cd "$(dirname "$0")"
npm ci --no-audit --no-fund
npm test
npm run build
cd ..
if ! git diff --exit-code -- src/ipcbus/web/static \
  || [ -n "$(git status --porcelain --untracked-files=all -- src/ipcbus/web/static)" ]; then
  echo "src/ipcbus/web/static differs from a fresh build of js/: run 'npm --prefix js run build' and commit it" >&2
  exit 1
fi
echo "js: tests pass and the committed bundle matches a fresh build"
