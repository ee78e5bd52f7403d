"""Run cryo's Python bindings over a block range (executed with the peers virtualenv's python).

    peers-venv/bin/python bench/peer_cryo.py --url URL --start N --end M --output-dir DIR

`--end` is inclusive here, like every tool in the benchmark; cryo's own ranges are
end-exclusive, so it is given N:M+1. Extra `--cryo-arg KEY=VALUE` pairs (integers parsed)
go to `cryo.freeze` unchanged.
"""

from __future__ import annotations

import argparse

import cryo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--start", type=int, required=True)
    parser.add_argument("--end", type=int, required=True)
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--cryo-arg", action="append", default=[])
    args = parser.parse_args()
    extra: dict[str, object] = {}
    for pair in args.cryo_arg:
        key, _, value = pair.partition("=")
        extra[key] = int(value) if value.isdigit() else value
    cryo.freeze(
        ["blocks", "transactions", "logs"],
        blocks=[f"{args.start}:{args.end + 1}"],
        rpc=args.url,
        output_dir=args.output_dir,
        **extra,
    )


if __name__ == "__main__":
    main()
