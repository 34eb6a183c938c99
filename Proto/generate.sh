#!/usr/bin/env bash
# Regenerates the committed protobuf code from Proto/kvd/v1/*.proto:
#   Swift  -> Sources/KVDProtocol/Generated/
#   Python -> Clients/python/kvd/v1/
#   C      -> Clients/c/generated/  (protobuf-c, for the C client)
# Needs Debian's protoc and protoc-c (apt: protobuf-compiler protobuf-c-compiler). protoc-gen-swift
# is taken from $PROTOC_GEN_SWIFT, or built once from the swift-protobuf checkout SwiftPM resolved
# for this package (same version as the runtime, so generated code and library always agree).
# CI never runs this: the generated files are committed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

plugin=${PROTOC_GEN_SWIFT:-}
if [ -z "$plugin" ]; then
  swift package resolve >/dev/null
  checkout="$root/.build/checkouts/swift-protobuf"
  swift build --package-path "$checkout" --scratch-path "$root/.build-protoc-gen-swift" \
    --product protoc-gen-swift >&2
  plugin="$root/.build-protoc-gen-swift/debug/protoc-gen-swift"
fi

protos=(Proto/kvd/v1/*.proto)
swift_out=Sources/KVDProtocol/Generated
py_out=Clients/python
c_out=Clients/c/generated

rm -rf "$swift_out" "$py_out/kvd/v1" "$c_out"
mkdir -p "$swift_out" "$py_out/kvd/v1" "$c_out"

protoc -I Proto --plugin=protoc-gen-swift="$plugin" \
  --swift_opt=Visibility=Public --swift_opt=FileNaming=PathToUnderscores \
  --swift_out="$swift_out" "${protos[@]}"
# protoc-gen-swift marks messages with heap storage as unchecked Sendable; say why on the line,
# like every hand-written one.
sed -i 's|: @unchecked Sendable {$|: @unchecked Sendable {  // safe: generated; swift-protobuf copies its storage on write, never shares it mutably|' "$swift_out"/*.swift
protoc -I Proto --python_out="$py_out" --pyi_out="$py_out" "${protos[@]}"
touch "$py_out/kvd/v1/__init__.py"
protoc-c -I Proto --c_out="$c_out" "${protos[@]}"
echo "generated: $swift_out, $py_out/kvd/v1, $c_out" >&2
