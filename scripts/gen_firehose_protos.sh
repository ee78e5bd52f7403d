#!/usr/bin/env bash
# Regenerate the Python modules of the Firehose protocol from the .proto files beside them
# (StreamingFast's sf.firehose.v2 and sf.ethereum.type.v2, as Amp vendors them). The output
# is committed; run this (`make protos`) after changing a .proto. Needs grpcio-tools.
set -euo pipefail
cd "$(dirname "$0")/../src/ampd/providers/firehose/proto"
"${PY:-../../../../../.venv/bin/python}" -m grpc_tools.protoc -I . \
    --python_out=. --pyi_out=. --grpc_python_out=. firehose.proto ethereum.proto
# protoc writes top-level imports (`import firehose_pb2`); this package imports its siblings.
sed -i 's/^import firehose_pb2 as/from . import firehose_pb2 as/' firehose_pb2_grpc.py
rm -f ethereum_pb2_grpc.py  # ethereum.proto declares messages only
