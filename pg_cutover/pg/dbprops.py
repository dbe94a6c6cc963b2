"""What belongs to a database rather than to its contents, carried from one database to another.

A dump without --create (the cutover's backup) holds none of it: owner, comment,
connection limit, grants on the database, and `ALTER DATABASE / ALTER ROLE ... IN
DATABASE ... SET` settings. A rollback that restores into a new database carries them
over from production, so the restored production behaves as before (a per-database
search_path or statement_timeout lost in a rollback is an outage of its own).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from psycopg2 import sql

from pg_cutover.pg import db
from pg_cutover.pg.db import ConnInfo

# Settings whose value is a list of (possibly quoted) names; pg_dump splits them the same way.
LIST_SETTINGS = {"search_path", "temp_tablespaces", "session_preload_libraries", "shared_preload_libraries",
                 "local_preload_libraries", "unix_socket_directories"}
DATABASE_PRIVILEGES = {"CONNECT", "TEMPORARY", "CREATE"}


@dataclass
class DatabaseProperties:
    owner: str
    connection_limit: int
    comment: str | None
    acl: list[tuple[str, str, bool]] | None  # (grantee or PUBLIC, privilege, grantable); None = the defaults
    settings: list[tuple[str | None, str]] = field(default_factory=list)  # (role or None, "name=value")

    def describe(self) -> str:
        parts = [f"owner {self.owner}"]
        if self.settings:
            parts.append(f"{len(self.settings)} settings")
        if self.comment:
            parts.append("comment")
        if self.acl is not None:
            parts.append(f"{len(self.acl)} grants")
        if self.connection_limit != -1:
            parts.append(f"connection limit {self.connection_limit}")
        return ", ".join(parts)


def read_properties(conn: ConnInfo, database: str) -> DatabaseProperties:
    with db.connect(conn, "postgres") as c, c.cursor() as cur:
        cur.execute("SELECT oid, pg_get_userbyid(datdba), datconnlimit, shobj_description(oid, 'pg_database'), "
                    "datacl IS NULL FROM pg_database WHERE datname = %s", (database,))
        oid, owner, limit, comment, default_acl = cur.fetchone()
        acl = None
        if not default_acl:
            cur.execute("SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END, "
                        "a.privilege_type, a.is_grantable FROM pg_database d, aclexplode(d.datacl) a "
                        "WHERE d.oid = %s ORDER BY 1, 2", (oid,))
            acl = [(grantee, privilege, grantable) for grantee, privilege, grantable in cur.fetchall()]
        cur.execute("SELECT CASE WHEN s.setrole = 0 THEN NULL ELSE pg_get_userbyid(s.setrole) END, unnest(s.setconfig) "
                    "FROM pg_db_role_setting s WHERE s.setdatabase = %s ORDER BY 1 NULLS FIRST, 2", (oid,))
        settings = [(role, entry) for role, entry in cur.fetchall()]
    return DatabaseProperties(owner, limit, comment, acl, settings)


def apply_properties(conn: ConnInfo, database: str, props: DatabaseProperties) -> list[str]:
    """Give `database` these properties; what could not be applied comes back as sentences."""
    problems: list[str] = []
    target = sql.Identifier(database)
    statements: list[tuple[str, sql.Composable]] = []
    for role, entry in props.settings:
        name, _, value = entry.partition("=")
        prefix = (sql.SQL("ALTER ROLE {} IN DATABASE {}").format(sql.Identifier(role), target) if role
                  else sql.SQL("ALTER DATABASE {}").format(target))
        statements.append((f"setting {name}" + (f" for role {role}" if role else ""),
                           sql.SQL("{} SET {} TO {}").format(prefix, _setting_name(name), _setting_value(name, value))))
    if props.comment is not None:
        statements.append(("comment", sql.SQL("COMMENT ON DATABASE {} IS {}").format(target, sql.Literal(props.comment))))
    if props.connection_limit != -1:
        statements.append(("connection limit", sql.SQL("ALTER DATABASE {} CONNECTION LIMIT {}").format(
            target, sql.Literal(props.connection_limit))))
    if props.acl is not None:
        statements.append(("grants", sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(target)))
        for grantee, privilege, grantable in props.acl:
            if privilege not in DATABASE_PRIVILEGES:
                problems.append(f"privilege {privilege} for {grantee} not carried (unknown privilege)")
                continue
            who = sql.SQL("PUBLIC") if grantee == "PUBLIC" else sql.Identifier(grantee)
            statements.append((f"grant {privilege} to {grantee}", sql.SQL("GRANT {} ON DATABASE {} TO {}{}").format(
                sql.SQL(privilege), target, who, sql.SQL(" WITH GRANT OPTION" if grantable else ""))))
    # Last: once another role owns it, this session may no longer alter it.
    statements.append(("owner", sql.SQL("ALTER DATABASE {} OWNER TO {}").format(target, sql.Identifier(props.owner))))
    with db.connect(conn, "postgres") as c, c.cursor() as cur:
        for what, statement in statements:
            try:
                cur.execute(statement)
            except Exception as exc:  # psycopg2 errors: each property stands alone
                problems.append(f"{what} not carried ({' '.join(str(exc).split())[:200]})")
    return problems


def carry_properties(conn: ConnInfo, source: str, target: str) -> tuple[DatabaseProperties, list[str]]:
    props = read_properties(conn, source)
    return props, apply_properties(conn, target, props)


def _setting_name(name: str) -> sql.Composable:
    # A custom setting (app.tenant) is two names joined by a dot, not one quoted name.
    return sql.SQL(".").join(sql.Identifier(part) for part in name.split("."))


def _setting_value(name: str, value: str) -> sql.Composable:
    if name.lower() not in LIST_SETTINGS:
        return sql.Literal(value)
    return sql.SQL(", ").join(sql.Literal(item) for item in split_list(value))


def split_list(value: str) -> list[str]:
    """A list setting as stored (`"$user", public`) into its names, double quotes undone."""
    items, current, quoted, i = [], [], False, 0
    while i < len(value):
        ch = value[i]
        if quoted:
            if ch == '"' and value[i + 1:i + 2] == '"':
                current.append('"')
                i += 1
            elif ch == '"':
                quoted = False
            else:
                current.append(ch)
        elif ch == '"':
            quoted = True
        elif ch == ",":
            items.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
        i += 1
    items.append("".join(current).strip())
    return [item for item in items if item]
