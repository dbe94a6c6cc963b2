"""Proof before stamping: catalog fingerprints, their differences, and data parity.

A database may be stamped at the baseline revision only if its schema is the
one the baseline builds from nothing. `fingerprint` reads that schema from the
catalogs into plain JSON-serialisable dicts (kind -> object -> properties), so
it can be kept in a manifest; `diff` lists every difference as one readable
row; an allowlist accepts the differences a reviewer has already looked at.

Objects are keyed by what they are, not by what they happen to be called where
PostgreSQL picks the name: an index is "public.beers USING btree (style)", a
unique constraint "public.breweries UNIQUE (name)". Their names are a property,
so a name-only difference reads as one `name` row instead of one object
missing on each side. OIDs, owners and privileges are never read.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from psycopg2 import sql

from pg_cutover.errors import ConfigError
from pg_cutover.pg import db
from pg_cutover.pg.db import ConnInfo
from pg_cutover.pg.tools import PgClient

if TYPE_CHECKING:
    import pandas as pd

Fingerprint = dict[str, dict[str, dict[str, Any]]]

# The order kinds appear in a diff, and the only kinds an allowlist may name.
KINDS = (
    "schema",
    "table",
    "column",
    "primary_key",
    "foreign_key",
    "unique",
    "check",
    "exclusion",
    "index",
    "sequence",
    "enum",
    "domain",
    "view",
)

DIFF_COLUMNS = ("kind", "object", "property")
PRESENCE = "(object)"
ABSENT = "absent"
SKIPPED_SIZE = "skipped (size)"
ALLOW_SETTING = "CUTOVER_PARITY_ALLOW"

# User schemas only; LIKE patterns escape '_' so pg_toast/pg_temp match literally.
_USER_NS = """
    n.nspname NOT IN ('pg_catalog', 'information_schema')
    AND n.nspname NOT LIKE 'pg\\_toast%%'
    AND n.nspname NOT LIKE 'pg\\_temp\\_%%'
"""
# Objects that belong to an extension are the extension's, not the schema's.
_NOT_EXTENSION = """
    NOT EXISTS (SELECT 1 FROM pg_depend e
                WHERE e.classid = '{catalog}'::regclass AND e.objid = {oid} AND e.deptype = 'e')
"""
_REL_FILTER = (
    _USER_NS
    + " AND c.relname <> 'alembic_version' AND c.relpersistence <> 't' AND "
    + _NOT_EXTENSION.format(catalog="pg_class", oid="c.oid")
)

_FK_ACTIONS = {"a": "NO ACTION", "r": "RESTRICT", "c": "CASCADE", "n": "SET NULL", "d": "SET DEFAULT"}
_FK_MATCH = {"f": "FULL", "p": "PARTIAL", "s": "SIMPLE"}


def _squash(text: str | None) -> str | None:
    """Whitespace runs to one space: pretty-printing is not a difference."""
    return None if text is None else " ".join(text.split())


def _deferral(deferrable: bool, deferred: bool) -> str:
    if not deferrable:
        return "not deferrable"
    return "deferrable initially deferred" if deferred else "deferrable initially immediate"


# --------------------------------------------------------------------------- fingerprint


def fingerprint(conn: ConnInfo, dbname: str) -> Fingerprint:
    """The schema of dbname's user schemas as kind -> object -> properties; alembic_version left out."""
    with db.connect(conn, dbname) as c, c.cursor() as cur:
        fp: Fingerprint = {kind: {} for kind in KINDS}
        _schemas(cur, fp)
        _tables(cur, fp)
        _columns(cur, fp)
        _constraints(cur, fp)
        _indexes(cur, fp)
        _sequences(cur, fp)
        _enums(cur, fp)
        _domains(cur, fp)
        _views(cur, fp)
    # Sorted, so two fingerprints of one schema serialise to the same JSON.
    return {kind: dict(sorted(objects.items())) for kind, objects in fp.items()}


def _schemas(cur, fp: Fingerprint) -> None:
    cur.execute(
        f"""
        SELECT n.nspname FROM pg_namespace n
        WHERE {_USER_NS} AND {_NOT_EXTENSION.format(catalog='pg_namespace', oid='n.oid')}
        """
    )
    for (name,) in cur.fetchall():
        fp["schema"][name] = {}


def _tables(cur, fp: Fingerprint) -> None:
    cur.execute(
        f"""
        SELECT n.nspname || '.' || c.relname,
               CASE c.relkind WHEN 'p' THEN 'partitioned table' WHEN 'f' THEN 'foreign table' ELSE 'table' END,
               c.relpersistence = 'u'
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p', 'f') AND {_REL_FILTER}
        """
    )
    for name, kind, unlogged in cur.fetchall():
        fp["table"][name] = {"kind": kind, "unlogged": unlogged}


def _columns(cur, fp: Fingerprint) -> None:
    cur.execute(
        f"""
        SELECT n.nspname || '.' || c.relname || '.' || a.attname,
               format_type(a.atttypid, a.atttypmod),
               NOT a.attnotnull,
               CASE WHEN a.attgenerated = '' THEN pg_get_expr(d.adbin, d.adrelid) END,
               CASE a.attidentity WHEN 'a' THEN 'always' WHEN 'd' THEN 'by default' END,
               CASE WHEN a.attgenerated <> '' THEN pg_get_expr(d.adbin, d.adrelid) END,
               CASE WHEN a.attcollation <> t.typcollation THEN co.collname END
        FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_type t ON t.oid = a.atttypid
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        LEFT JOIN pg_collation co ON co.oid = a.attcollation
        WHERE c.relkind IN ('r', 'p', 'f') AND a.attnum > 0 AND NOT a.attisdropped AND {_REL_FILTER}
        """
    )
    for name, type_, nullable, default, identity, generated, collation in cur.fetchall():
        fp["column"][name] = {
            "type": type_,
            "nullable": nullable,
            "default": default,
            "identity": identity,
            "generated": generated,
            "collation": collation,
        }


def _constraints(cur, fp: Fingerprint) -> None:
    cur.execute(
        f"""
        SELECT n.nspname || '.' || c.relname, con.conname, con.contype, pg_get_constraintdef(con.oid),
               con.condeferrable, con.condeferred, con.convalidated,
               (SELECT string_agg(a.attname, ', ' ORDER BY k.i)
                  FROM unnest(con.conkey) WITH ORDINALITY AS k(attnum, i)
                  JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum),
               fn.nspname || '.' || fc.relname,
               (SELECT string_agg(a.attname, ', ' ORDER BY k.i)
                  FROM unnest(con.confkey) WITH ORDINALITY AS k(attnum, i)
                  JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.attnum),
               con.confdeltype, con.confupdtype, con.confmatchtype
        FROM pg_constraint con
        JOIN pg_class c ON c.oid = con.conrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_class fc ON fc.oid = con.confrelid
        LEFT JOIN pg_namespace fn ON fn.oid = fc.relnamespace
        WHERE con.contype IN ('p', 'f', 'u', 'c', 'x') AND {_REL_FILTER}
        ORDER BY con.conname
        """
    )
    for (table, name, contype, definition, deferrable, deferred, valid, columns, ref_table, ref_columns,
         on_delete, on_update, match) in cur.fetchall():
        deferral = _deferral(deferrable, deferred)
        if contype == "p":
            _put(fp["primary_key"], table, {"name": name, "columns": columns, "deferral": deferral})
        elif contype == "f":
            _put(
                fp["foreign_key"],
                f"{table} ({columns}) -> {ref_table} ({ref_columns})",
                {
                    "name": name,
                    "on_delete": _FK_ACTIONS.get(on_delete, on_delete),
                    "on_update": _FK_ACTIONS.get(on_update, on_update),
                    "match": _FK_MATCH.get(match, match),
                    "deferral": deferral,
                    "valid": valid,
                },
            )
        else:
            kind = {"u": "unique", "c": "check", "x": "exclusion"}[contype]
            _put(fp[kind], f"{table} {definition}", {"name": name, "deferral": deferral, "valid": valid})


def _indexes(cur, fp: Fingerprint) -> None:
    cur.execute(
        f"""
        SELECT n.nspname || '.' || c.relname, i.relname, quote_ident(i.relname), pg_get_indexdef(x.indexrelid),
               x.indisunique, pg_get_expr(x.indpred, x.indrelid), x.indisvalid,
               (SELECT con.contype FROM pg_constraint con WHERE con.conindid = x.indexrelid
                  AND con.conrelid = x.indrelid AND con.contype IN ('p', 'u', 'x') LIMIT 1)
        FROM pg_index x
        JOIN pg_class c ON c.oid = x.indrelid
        JOIN pg_class i ON i.oid = x.indexrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE {_REL_FILTER}
        ORDER BY i.relname
        """
    )
    backs = {"p": "primary key", "u": "unique constraint", "x": "exclusion constraint"}
    for table, name, quoted, indexdef, unique, predicate, valid, contype in cur.fetchall():
        _put(
            fp["index"],
            _index_key(indexdef, quoted, unique),
            {
                "name": name,
                "table": table,
                "unique": unique,
                "predicate": predicate,
                "valid": valid,
                "constraint": backs.get(contype),
            },
        )


def _index_key(indexdef: str, quoted_name: str, unique: bool) -> str:
    """pg_get_indexdef without "CREATE [UNIQUE] INDEX <name> ON ": the index by what it covers."""
    prefix = f"CREATE {'UNIQUE ' if unique else ''}INDEX {quoted_name} ON "
    return indexdef.removeprefix(prefix)


def _sequences(cur, fp: Fingerprint) -> None:
    cur.execute(
        f"""
        SELECT n.nspname || '.' || c.relname, format_type(s.seqtypid, NULL), s.seqincrement, s.seqstart,
               s.seqmin, s.seqmax, s.seqcycle,
               (SELECT tn.nspname || '.' || t.relname || '.' || a.attname
                  FROM pg_depend d
                  JOIN pg_class t ON t.oid = d.refobjid
                  JOIN pg_namespace tn ON tn.oid = t.relnamespace
                  JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
                 WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                   AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
                 LIMIT 1)
        FROM pg_sequence s
        JOIN pg_class c ON c.oid = s.seqrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE {_REL_FILTER}
        """
    )
    for name, type_, increment, start, minimum, maximum, cycle, owned_by in cur.fetchall():
        fp["sequence"][name] = {
            "type": type_,
            "increment": int(increment),
            "start": int(start),
            "min": int(minimum),
            "max": int(maximum),
            "cycle": cycle,
            "owned_by": owned_by,
        }


def _enums(cur, fp: Fingerprint) -> None:
    cur.execute(
        f"""
        SELECT n.nspname || '.' || t.typname, array_agg(e.enumlabel::text ORDER BY e.enumsortorder)
        FROM pg_type t
        JOIN pg_namespace n ON n.oid = t.typnamespace
        JOIN pg_enum e ON e.enumtypid = t.oid
        WHERE t.typtype = 'e' AND {_USER_NS} AND {_NOT_EXTENSION.format(catalog='pg_type', oid='t.oid')}
        GROUP BY 1
        """
    )
    for name, labels in cur.fetchall():
        fp["enum"][name] = {"labels": list(labels)}


def _domains(cur, fp: Fingerprint) -> None:
    cur.execute(
        f"""
        SELECT n.nspname || '.' || t.typname, format_type(t.typbasetype, t.typtypmod), NOT t.typnotnull,
               pg_get_expr(t.typdefaultbin, 0),
               CASE WHEN t.typcollation <> b.typcollation THEN co.collname END,
               (SELECT array_agg(pg_get_constraintdef(con.oid) ORDER BY pg_get_constraintdef(con.oid))
                  FROM pg_constraint con WHERE con.contypid = t.oid AND con.contype = 'c')
        FROM pg_type t
        JOIN pg_namespace n ON n.oid = t.typnamespace
        JOIN pg_type b ON b.oid = t.typbasetype
        LEFT JOIN pg_collation co ON co.oid = t.typcollation
        WHERE t.typtype = 'd' AND {_USER_NS} AND {_NOT_EXTENSION.format(catalog='pg_type', oid='t.oid')}
        """
    )
    for name, base, nullable, default, collation, checks in cur.fetchall():
        fp["domain"][name] = {"type": base, "nullable": nullable, "default": default, "collation": collation,
                              "checks": list(checks or [])}


def _views(cur, fp: Fingerprint) -> None:
    cur.execute(
        f"""
        SELECT n.nspname || '.' || c.relname, CASE c.relkind WHEN 'm' THEN 'materialized view' ELSE 'view' END,
               pg_get_viewdef(c.oid)
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('v', 'm') AND {_REL_FILTER}
        """
    )
    for name, kind, definition in cur.fetchall():
        fp["view"][name] = {"kind": kind, "definition": _squash(definition)}


def _put(bucket: dict[str, dict[str, Any]], key: str, props: dict[str, Any]) -> None:
    """Two objects with the same key (duplicate indexes): the later ones get ' [2]', ' [3]'..."""
    candidate, n = key, 1
    while candidate in bucket:
        n += 1
        candidate = f"{key} [{n}]"
    bucket[candidate] = props


# --------------------------------------------------------------------------- diff


def render_value(value: Any) -> str:
    """One property value as a diff cell."""
    if value is None:
        return "(none)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ", ".join(render_value(v) for v in value)
    return str(value)


def _present(props: dict[str, Any]) -> str:
    """The cell for the side that has the object: its properties that are set, in fingerprint order."""
    shown = [f"{k}={render_value(v)}" for k, v in props.items() if v is not None]
    return "present: " + "; ".join(shown) if shown else "present"


def _kind_rank(kind: str) -> tuple[int, str]:
    return (KINDS.index(kind), kind) if kind in KINDS else (len(KINDS), kind)


def diff(a: Fingerprint, b: Fingerprint, *, a_name: str = "pilot", b_name: str = "baseline") -> pd.DataFrame:
    """One row per difference (kind, object, property, <a_name>, <b_name>); empty when the schemas match.

    An object on one side only is one row with property "(object)": "absent" on
    the side without it, its properties on the other.
    """
    import pandas as pd  # imported on first use: half a second off every run's start-up
    if a_name == b_name or a_name in DIFF_COLUMNS or b_name in DIFF_COLUMNS:
        raise ValueError(f"diff needs two distinct side names other than {DIFF_COLUMNS}, got {a_name!r}, {b_name!r}")
    rows: list[tuple[str, str, str, str, str]] = []
    for kind in sorted(set(a) | set(b), key=_kind_rank):
        left, right = a.get(kind) or {}, b.get(kind) or {}
        for obj in sorted(set(left) | set(right)):
            if obj not in right:
                rows.append((kind, obj, PRESENCE, _present(left[obj]), ABSENT))
            elif obj not in left:
                rows.append((kind, obj, PRESENCE, ABSENT, _present(right[obj])))
            else:
                lp, rp = left[obj], right[obj]
                for prop in sorted(set(lp) | set(rp)):
                    if lp.get(prop) != rp.get(prop):
                        rows.append((kind, obj, prop, render_value(lp.get(prop)), render_value(rp.get(prop))))
    return pd.DataFrame(rows, columns=[*DIFF_COLUMNS, a_name, b_name])


# --------------------------------------------------------------------------- allowlist

_COMPACT_HELP = (
    f"{ALLOW_SETTING} expects kind:object[:property] entries separated by commas or newlines "
    f"(kind one of {', '.join(KINDS)}), or a JSON list of objects with \"kind\", \"object\" and optional "
    "\"property\" and \"reason\""
)
_PROPERTY_RE = re.compile(r"(?<!:):([a-z_]+|\(object\))$")


def _malformed(what: str) -> ConfigError:
    return ConfigError(f"{ALLOW_SETTING} has a malformed entry {what}: {_COMPACT_HELP}.")


def _split_top_level(text: str) -> list[str]:
    """Split on newlines, and on commas outside parentheses (object names hold column lists)."""
    parts, current, depth = [], [], 0
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth = max(0, depth - 1)
        if ch == "\n" or (ch == "," and depth == 0):
            parts.append("".join(current))
            current, depth = [], 0
            continue
        current.append(ch)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip() and not p.strip().startswith("#")]


def parse_allowlist(text: str) -> list[dict[str, str]]:
    """Entries from CUTOVER_PARITY_ALLOW: a JSON list, or compact kind:object[:property] items."""
    text = (text or "").strip()
    if not text:
        return []
    if text.startswith("["):
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise _malformed(f"(invalid JSON at line {exc.lineno} column {exc.colno})") from None
        entries = []
        for i, item in enumerate(raw, start=1):
            if (
                not isinstance(item, dict)
                or not set(item) <= {"kind", "object", "property", "reason"}
                or not all(isinstance(item.get(k), str) and item[k].strip() for k in ("kind", "object"))
                or not isinstance(item.get("property", ""), str)
                or item["kind"] not in KINDS
            ):
                raise _malformed(f"#{i} ({json.dumps(item)[:120]})")
            entry = {"kind": item["kind"], "object": item["object"].strip()}
            if item.get("property"):
                entry["property"] = item["property"].strip()
            if item.get("reason"):
                entry["reason"] = str(item["reason"])
            entries.append(entry)
        return entries
    entries = []
    for i, part in enumerate(_split_top_level(text), start=1):
        kind, sep, rest = part.partition(":")
        kind, rest = kind.strip(), rest.strip()
        if not sep or kind not in KINDS or not rest:
            raise _malformed(f"#{i} ({part[:120]!r})")
        entry = {"kind": kind}
        match = _PROPERTY_RE.search(rest)
        if match and match.start() > 0:
            entry["object"] = rest[: match.start()].strip()
            entry["property"] = match.group(1)
        else:
            entry["object"] = rest
        if not entry["object"]:
            raise _malformed(f"#{i} ({part[:120]!r})")
        entries.append(entry)
    return entries


def _matches(row: pd.Series, entry: dict[str, str]) -> bool:
    return (
        row["kind"] == entry["kind"]
        and row["object"] == entry["object"]
        and ("property" not in entry or row["property"] == entry["property"])
    )


def apply_allowlist(df: pd.DataFrame, allowlist: list[dict[str, str]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(differences still open, differences accepted by an allowlist entry); exact matches only."""
    if df.empty or not allowlist:
        return df.reset_index(drop=True), df.iloc[0:0].reset_index(drop=True)
    accepted = df.apply(lambda row: any(_matches(row, e) for e in allowlist), axis=1).astype(bool)
    return df[~accepted].reset_index(drop=True), df[accepted].reset_index(drop=True)


def unused_allowlist_entries(df: pd.DataFrame, allowlist: list[dict[str, str]]) -> list[dict[str, str]]:
    """Entries that accepted nothing: stale reviews worth removing from the setting."""
    if df.empty:
        return list(allowlist)
    return [e for e in allowlist if not any(_matches(row, e) for _, row in df.iterrows())]


# --------------------------------------------------------------------------- scratch databases


def drop_database(conn: ConnInfo, dbname: str, pg: PgClient | None) -> None:
    """With `pg.dropdb --force` when a PgClient is given, else by ending its sessions and DROP DATABASE."""
    if pg is not None:
        pg.dropdb(dbname)
        return
    with db.connect(conn, "postgres") as c, c.cursor() as cur:
        cur.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (dbname,),
        )
        cur.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(dbname)))


# --------------------------------------------------------------------------- data parity

# Order-independent and constant-memory: the sum over rows of both 64-bit halves of md5(row text),
# with the row count. No sort and no table-sized string on the server, unlike string_agg ORDER BY.
_CHECKSUM_SQL = """
SELECT count(*),
       coalesce(sum(('x' || substr(h, 1, 16))::bit(64)::bigint::numeric), 0),
       coalesce(sum(('x' || substr(h, 17, 16))::bit(64)::bigint::numeric), 0)
FROM (SELECT md5(t::text) AS h FROM {} AS t) AS rows
"""


_TEXT_SETTINGS = (
    "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'postgres'; "
    "SET extra_float_digits = 3; SET bytea_output = 'hex'"
)


def _table_stats(
    cur, tables: list[str], checksum_max_bytes: int, known_rows: dict[str, int] | None = None
) -> dict[str, tuple[int | None, int | None, str | None]]:
    """table -> (rows, total bytes, checksum or None when too big); rows None when the table is missing.

    A table too big to checksum is judged on its exact count; one taken earlier in the same
    write pause (`known_rows`) is not taken again.
    """
    out: dict[str, tuple[int | None, int | None, str | None]] = {}
    for table in tables:
        schema, name = table.split(".", 1)
        cur.execute(
            "SELECT pg_total_relation_size(c.oid) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')",
            (schema, name),
        )
        found = cur.fetchone()
        if found is None:
            out[table] = (None, None, None)
            continue
        size = int(found[0])
        ident = sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(name))
        if size <= checksum_max_bytes:
            cur.execute(sql.SQL(_CHECKSUM_SQL).format(ident))
            rows, s1, s2 = cur.fetchone()
            checksum = hashlib.md5(f"{rows}:{s1}:{s2}".encode()).hexdigest()
        elif known_rows is not None and table in known_rows:
            rows, checksum = known_rows[table], None
        else:
            cur.execute(sql.SQL("SELECT count(*) FROM {}").format(ident))
            rows, checksum = cur.fetchone()[0], None
        out[table] = (int(rows), size, checksum)
    return out


def read_data_side(conn: ConnInfo, dbname: str, tables: list[str], *, checksum_max_bytes: int,
                   known_rows: dict[str, int] | None = None, lock_timeout: str | None = None) -> dict:
    """One side of data parity: table -> (rows, bytes, checksum or None when over the size limit)."""
    with db.connect(conn, dbname) as c, c.cursor() as cur:
        # Row text must not depend on either database's or role's defaults.
        cur.execute(_TEXT_SETTINGS)
        if lock_timeout:
            cur.execute("SELECT set_config('lock_timeout', %s, false)", (lock_timeout,))
        return _table_stats(cur, tables, checksum_max_bytes, known_rows)


def data_parity(
    conn: ConnInfo, a_db: str, b_db: str, tables: list[str] | None, *, checksum_max_bytes: int,
    stats_a: dict | None = None, known_rows_b: dict[str, int] | None = None,
) -> pd.DataFrame:
    """Exact counts for every table, checksums for tables up to checksum_max_bytes (on both sides).

    Rows: table, rows_a, rows_b, checksum_a, checksum_b, equal. A table missing
    on one side has rows None there; a table over the size limit on either side
    gets "skipped (size)" in both checksum cells and is judged on counts alone.
    The checksum is md5 over every row's text, combined order-independently on
    the server (see _CHECKSUM_SQL): it is comparable between two data_parity
    sides, not with db.table_checksums. `stats_a` is a_db's `read_data_side` for
    the same tables, already read (a paused production can be read while its copy
    is still being restored); `known_rows_b` are b_db's exact counts, taken
    earlier in the same pause.
    """
    import pandas as pd  # imported on first use: half a second off every run's start-up
    if tables is None:
        tables = sorted(set(db.list_tables(conn, a_db)) | set(db.list_tables(conn, b_db)))

    # Both sides at once: each is one server backend reading its own database, so the wait
    # (inside the write-pause window) is the slower side, not the sum.
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="data-parity") as pool:
        side_a = (pool.submit(read_data_side, conn, a_db, tables, checksum_max_bytes=checksum_max_bytes)
                  if stats_a is None else None)
        side_b = pool.submit(read_data_side, conn, b_db, tables, checksum_max_bytes=checksum_max_bytes,
                             known_rows=known_rows_b)
        stats_a = stats_a if side_a is None else side_a.result()
        stats_b = side_b.result()
    rows = []
    for table in tables:
        rows_a, _, sum_a = stats_a[table]
        rows_b, _, sum_b = stats_b[table]
        if sum_a is None or sum_b is None:
            sum_a = sum_b = SKIPPED_SIZE if rows_a is not None and rows_b is not None else None
            equal = rows_a is not None and rows_a == rows_b
        else:
            equal = rows_a == rows_b and sum_a == sum_b
        rows.append((table, rows_a, rows_b, sum_a, sum_b, bool(equal)))
    names = ["table", "rows_a", "rows_b", "checksum_a", "checksum_b", "equal"]
    # Object columns: counts stay Python ints (None for a missing side), not floats with NaN.
    columns = {name: pd.Series([r[i] for r in rows], dtype=object) for i, name in enumerate(names[:-1])}
    columns["equal"] = pd.Series([r[-1] for r in rows], dtype=bool)
    return pd.DataFrame(columns, columns=names)


# --------------------------------------------------------------------------- rendering


def _cell(value: Any, max_cell: int | None) -> str:
    import pandas as pd  # imported on first use: half a second off every run's start-up
    if value is None or (not isinstance(value, (list, tuple, dict, str)) and pd.isna(value)):
        text = ""
    elif isinstance(value, bool):
        text = "true" if value else "false"
    else:
        text = str(value)
    text = " ".join(text.split()).replace("\\", "\\\\").replace("|", "\\|")
    if max_cell is not None and len(text) > max_cell:
        text = text[: max_cell - 1] + "…"
    return text


def render_markdown(df: pd.DataFrame, title: str, *, max_cell: int | None = None, empty: str = "No rows.") -> str:
    """A markdown heading and table (pipes escaped, newlines folded); `empty` when there are no rows."""
    lines = [f"### {title}", ""]
    if df.empty:
        lines.append(empty)
        return "\n".join(lines) + "\n"
    headers = [_cell(c, None) for c in df.columns]
    lines.append("| " + " | ".join(headers) + " |")
    lines.append("|" + "|".join(" --- " for _ in headers) + "|")
    for record in df.itertuples(index=False, name=None):
        lines.append("| " + " | ".join(_cell(v, max_cell) for v in record) + " |")
    return "\n".join(lines) + "\n"


def _plain(value: Any) -> Any:
    if value is None:
        return None
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()  # numpy scalar -> Python
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def df_to_rows(df: pd.DataFrame) -> list[dict[str, Any]]:
    """Records of plain Python values (no numpy types, NaN as None), for Prefect table artifacts."""
    return [
        {str(col): _plain(val) for col, val in zip(df.columns, record)}
        for record in df.itertuples(index=False, name=None)
    ]
