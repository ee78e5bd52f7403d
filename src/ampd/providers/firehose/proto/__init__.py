"""The Firehose protocol's generated modules (scripts/gen_firehose_protos.sh; do not edit)."""
