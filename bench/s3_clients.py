"""aiobotocore vs obstore against a real S3 server (SeaweedFS `weed mini` on loopback), in one run:
multipart upload throughput (8 MiB parts, sequential and 4 in flight), ranged GET throughput,
and presigning. Prints a Markdown table, the ratios, and a `summary:` line.

    .venv/bin/python bench/s3_clients.py [--mib 96] [--rounds 3]

Needs tests/s3/build-weed.sh's binary. The figures and the choice are in docs/decisions.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import obstore  # noqa: E402
from aiobotocore.config import AioConfig  # noqa: E402
from aiobotocore.session import get_session  # noqa: E402
from obstore.store import S3Store  # noqa: E402

from s3_fixtures import WeedServer, weed_binary  # noqa: E402

MiB = 1024 * 1024
PART = 8 * MiB
BUCKET = "bench-clients"


async def best(rounds: int, fn: Callable[[], Awaitable[float]]) -> float:
    """Median seconds of `rounds` runs (the first, warming pools, is not counted)."""
    await fn()
    return statistics.median([await fn() for _ in range(rounds)])


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=96)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--presigns", type=int, default=2000)
    args = parser.parse_args()
    binary = weed_binary()
    if binary is None:
        sys.exit("no SeaweedFS binary: run tests/s3/build-weed.sh")
    size = args.mib * MiB
    data = os.urandom(size)
    parts = [data[i : i + PART] for i in range(0, size, PART)]

    with tempfile.TemporaryDirectory() as tmp:
        server = WeedServer(binary, Path(tmp))
        server.start()
        try:
            server.create_bucket(BUCKET)
            rows = await measure(server, data, parts, args)
        finally:
            server.stop()

    print(f"\n{args.mib} MiB object, {PART // MiB} MiB parts, median of {args.rounds} runs\n")
    print("| measure | aiobotocore | obstore | aiobotocore / obstore |")
    print("|---|---|---|---|")
    for name, unit, a, o in rows:
        ratio = f"{a / o:.2f}" if o else "n/a"
        print(
            f"| {name} | {a:.1f} {unit} | {o:.1f} {unit} | {ratio} |"
            if o
            else f"| {name} | {a:.1f} {unit} | not offered | n/a |"
        )
    figures = ", ".join(f"{name} {a:.0f}/{o:.0f} {unit}" for name, unit, a, o in rows)
    print(f"\nsummary: aiobotocore/obstore: {figures}")


async def measure(
    server: WeedServer, data: bytes, parts: list[bytes], args: argparse.Namespace
) -> list[tuple[str, str, float, float]]:
    size = len(data)
    session = get_session()
    config = AioConfig(
        s3={"addressing_style": "path"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        max_pool_connections=16,
    )
    store = S3Store(
        BUCKET,
        endpoint=server.endpoint,
        access_key_id=server.access_key,
        secret_access_key=server.secret_key,
        region="us-east-1",
        virtual_hosted_style_request=False,
        client_options={"allow_http": True},
    )
    async with session.create_client(
        "s3",
        endpoint_url=server.endpoint,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
        region_name="us-east-1",
        config=config,
    ) as client:
        c: Any = client

        async def boto_multipart(concurrency: int) -> float:
            start = time.perf_counter()
            up = await c.create_multipart_upload(Bucket=BUCKET, Key="boto")
            gate = asyncio.Semaphore(concurrency)

            async def one(n: int, body: bytes) -> dict[str, Any]:
                async with gate:
                    r = await c.upload_part(
                        Bucket=BUCKET, Key="boto", UploadId=up["UploadId"], PartNumber=n, Body=body
                    )
                return {"PartNumber": n, "ETag": r["ETag"]}

            done = await asyncio.gather(*(one(n, b) for n, b in enumerate(parts, 1)))
            await c.complete_multipart_upload(
                Bucket=BUCKET,
                Key="boto",
                UploadId=up["UploadId"],
                MultipartUpload={"Parts": list(done)},
            )
            return time.perf_counter() - start

        async def obs_multipart(concurrency: int) -> float:
            # obstore has no part-level API: its put() splits into a multipart upload itself.
            start = time.perf_counter()
            await obstore.put_async(
                store, "obs", data, chunk_size=PART, max_concurrency=concurrency
            )
            return time.perf_counter() - start

        async def boto_get() -> float:
            start = time.perf_counter()
            got = 0
            for offset in range(0, size, PART * 4):
                r = await c.get_object(
                    Bucket=BUCKET, Key="boto", Range=f"bytes={offset}-{offset + PART * 4 - 1}"
                )
                async with r["Body"] as body:
                    async for chunk in body.iter_chunks(MiB):
                        got += len(chunk)
            assert got == size, got
            return time.perf_counter() - start

        async def obs_get() -> float:
            start = time.perf_counter()
            got = 0
            for offset in range(0, size, PART * 4):
                buf = await obstore.get_range_async(
                    store, "obs", start=offset, end=min(size, offset + PART * 4)
                )
                got += len(memoryview(buf))
            assert got == size, got
            return time.perf_counter() - start

        async def boto_sign() -> float:
            start = time.perf_counter()
            for _ in range(args.presigns):
                await c.generate_presigned_url(
                    "get_object",
                    Params={
                        "Bucket": BUCKET,
                        "Key": "boto",
                        "ResponseContentDisposition": 'attachment; filename="x.mp4"',
                    },
                    ExpiresIn=300,
                )
            return time.perf_counter() - start

        async def obs_sign() -> float:
            # No way to sign response-content-disposition: the bare GET is what is measured.
            start = time.perf_counter()
            for _ in range(args.presigns):
                await obstore.sign_async(store, "GET", "obs", timedelta(seconds=300))
            return time.perf_counter() - start

        rows: list[tuple[str, str, float, float]] = []
        mib = size / MiB
        for concurrency in (1, 4):
            a = await best(args.rounds, lambda n=concurrency: boto_multipart(n))
            o = await best(args.rounds, lambda n=concurrency: obs_multipart(n))
            rows.append((f"multipart upload, {concurrency} in flight", "MiB/s", mib / a, mib / o))
        a = await best(args.rounds, boto_get)
        o = await best(args.rounds, obs_get)
        rows.append(("ranged GET (32 MiB ranges)", "MiB/s", mib / a, mib / o))
        a = await best(args.rounds, boto_sign)
        o = await best(args.rounds, obs_sign)
        rows.append(("presign GET", "URLs/s", args.presigns / a, args.presigns / o))
        return rows


if __name__ == "__main__":
    asyncio.run(main())
