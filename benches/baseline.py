"""The reference importers of the benchmark: what a quick script would do instead of verigator-sync.

    python baseline.py aiohttp  BASE_URL SERVICE_ID CSV LEDGER   # asyncio + aiohttp, 32 at a time
    python baseline.py requests BASE_URL SERVICE_ID CSV LEDGER   # requests, one at a time

Both keep connections alive, send each row's user as JSON with the X-Service-Auth header from
VERIGATOR_USERNAME / VERIGATOR_PASSWORD, and write each returned UserID to a SQLite table with Python's
defaults (no retries, no skip check). The sequential one commits each row as it goes, the asynchronous
one every 1,000 rows and at the end. They print how many users were recorded, so the bench can check
that the work was done, and the seconds from the first request to the last commit. The bench times
them like the importer, by the wall clock of the whole process, and shows both.
"""

import asyncio
import csv
import os
import sqlite3
import sys
import time

CONCURRENCY = 32


def users(path):
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            yield {"id_in_service": row["id_in_service"], "phone_number": row["phone_number"]}


def ledger(path):
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE IF NOT EXISTS users (id_in_service TEXT PRIMARY KEY, phone_number TEXT, user_id TEXT)"
    )
    return conn


def record(conn, user, user_id):
    conn.execute(
        "INSERT INTO users VALUES (?, ?, ?)", (user["id_in_service"], user["phone_number"], user_id)
    )


def headers():
    auth = f"{os.environ['VERIGATOR_USERNAME']}:{os.environ['VERIGATOR_PASSWORD']}"
    return {"X-Service-Auth": auth, "Accept": "application/json"}


async def with_aiohttp(url, path, conn):
    import aiohttp

    recorded = 0
    rows = users(path)
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector, headers=headers()) as session:

        async def worker():
            nonlocal recorded
            # The workers share one iterator: each takes the next row when it is free.
            for user in rows:
                async with session.post(url, json=user) as response:
                    body = await response.json()
                    if response.status == 201:
                        record(conn, user, body["id"])
                        recorded += 1
                        if recorded % 1000 == 0:
                            conn.commit()

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    conn.commit()
    return recorded


def with_requests(url, path, conn):
    import requests

    recorded = 0
    with requests.Session() as session:
        session.headers.update(headers())
        for user in users(path):
            response = session.post(url, json=user)
            if response.status_code == 201:
                record(conn, user, response.json()["id"])
                conn.commit()
                recorded += 1
    return recorded


def main():
    how, base, service, path, db = sys.argv[1:6]
    url = f"{base.rstrip('/')}/v1/service/service/{service}/users"
    if how == "aiohttp":
        import aiohttp  # noqa: F401  (imported before the clock starts)

        run = lambda conn: asyncio.run(with_aiohttp(url, path, conn))  # noqa: E731
    elif how == "requests":
        import requests  # noqa: F401

        run = lambda conn: with_requests(url, path, conn)  # noqa: E731
    else:
        sys.exit(f"unknown importer {how!r}: aiohttp or requests")
    conn = ledger(db)
    start = time.perf_counter()
    n = run(conn)
    print(n, time.perf_counter() - start)


if __name__ == "__main__":
    main()
