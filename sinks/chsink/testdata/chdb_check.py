"""Runs SQL on the current ClickHouse engine embedded by chdb (chdb-core), for TestCurrentClickHouse.

Reads a JSON object from stdin: {"statements": [sql, ...], "queries": [[name, sql], ...],
"current_only": [[name, sql], ...]} (current_only: checks of what only current servers have).
Runs every statement in order in a fresh session (a temporary directory), then every query,
and prints one JSON object: {"version": "...", "results": {name: {"meta": [...], "data": [...]}}}
(ClickHouse's JSONCompact). A failing statement or query exits 1 with the SQL and the engine's
error on stderr.
"""
import json
import sys
import tempfile

from chdb import session


def main():
    req = json.load(sys.stdin)
    with tempfile.TemporaryDirectory(prefix="ams-chdb-") as path:
        sess = session.Session(path)
        try:
            for i, sql in enumerate(req["statements"]):
                try:
                    sess.query(sql)
                except Exception as e:  # the engine's error, with the statement
                    sys.stderr.write("statement %d failed: %s\n--- SQL:\n%s\n" % (i + 1, e, sql))
                    return 1
            out = {"version": str(sess.query("SELECT version()", "CSV")).strip().strip('"'), "results": {}}
            for name, sql in req["queries"] + req.get("current_only", []):
                try:
                    res = sess.query(sql, "JSONCompact")
                except Exception as e:
                    sys.stderr.write("query %r failed: %s\n--- SQL:\n%s\n" % (name, e, sql))
                    return 1
                text = str(res)
                out["results"][name] = json.loads(text) if text.strip() else {"meta": [], "data": []}
        finally:
            sess.close()
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
