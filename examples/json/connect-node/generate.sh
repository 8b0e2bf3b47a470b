#!/bin/sh
# Regenerate gen/ (or the directory given) from the txverify contract with protoc-gen-es:
# txverify/v1/verification.proto, what it imports (common.proto; google/protobuf/timestamp.proto
# is in @bufbuild/protobuf/wkt), and google/rpc/error_details.proto for ErrorInfo and RetryInfo.
#
#   sh generate.sh [OUT_DIR]        (after npm ci; default OUT_DIR: gen)
#
# protoc is the one in grpcio-tools (python -m grpc_tools.protoc, which adds the
# google/protobuf include itself); google/rpc/*.proto come with googleapis-common-protos.
# PYTHON names a Python that has both (default: the repository's .venv).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
out=${1:-$here/gen}
python=${PYTHON:-$root/.venv/bin/python}
plugin=$here/node_modules/.bin/protoc-gen-es
if [ ! -x "$plugin" ]; then
  echo "generate.sh: $plugin is missing: run npm ci first" >&2
  exit 1
fi
googleapis=$("$python" -c 'import os, google.rpc.error_details_pb2 as m; print(os.path.dirname(os.path.dirname(os.path.dirname(m.__file__))))')
mkdir -p "$out"
cd "$here"
"$python" -m grpc_tools.protoc -I "$root/proto" -I "$googleapis" \
  --plugin=protoc-gen-es="$plugin" \
  --es_out="$out" --es_opt=target=js,import_extension=js \
  txverify/v1/verification.proto txverify/v1/common.proto google/rpc/error_details.proto
