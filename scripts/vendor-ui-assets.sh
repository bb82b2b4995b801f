#!/usr/bin/env bash
# Refreshes the API documentation assets served by engram-api at /docs and /redoc from the
# npm registry. The files are committed under api/assets/vendor so a build needs no network.
set -euo pipefail
cd "$(dirname "$0")/.."

SWAGGER_UI_DIST=5.32.0
REDOC=2.5.0

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "swagger-ui-dist@$SWAGGER_UI_DIST" "redoc@$REDOC" >/dev/null)
mkdir -p "$work/swagger" "$work/redoc"
tar -xzf "$work/swagger-ui-dist-$SWAGGER_UI_DIST.tgz" -C "$work/swagger" --strip-components=1
tar -xzf "$work/redoc-$REDOC.tgz" -C "$work/redoc" --strip-components=1
out=api/assets/vendor
cp "$work/swagger/swagger-ui-bundle.js" "$work/swagger/swagger-ui.css" "$out/"
cp "$work/swagger/LICENSE" "$out/swagger-ui.LICENSE"
cp "$work/redoc/bundles/redoc.standalone.js" "$out/"
cp "$work/redoc/LICENSE" "$out/redoc.LICENSE"
echo "vendored swagger-ui-dist $SWAGGER_UI_DIST and redoc $REDOC into $out" >&2
