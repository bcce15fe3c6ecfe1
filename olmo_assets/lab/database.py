"""Where the lab's shared state lives: embedded SQLite, or PostgreSQL when configured.

Two tools keep state beside the artifacts: Dagster (runs, event logs, schedules) and MLflow
(experiments, runs, metrics). By default both are SQLite files in the repository
(``.dagster/`` and ``.mlflow/mlflow.db``). With ``OLMO_LAB_DATABASE_URL`` set
(``postgresql://user:password@host:port/database``) both go to that PostgreSQL database:

- Dagster's tables in the database's default schema (``public``): the instance the lab uses
  is ``$DAGSTER_HOME/postgres/``, whose ``dagster.yaml`` is ``$DAGSTER_HOME/dagster.yaml``
  plus ``storage: postgres: postgres_url: {env: OLMO_LAB_DAGSTER_DATABASE_URL}``, written
  here (no password is copied into it). The lab sets that variable to the URL with psycopg2
  as SQLAlchemy's driver (``postgresql+psycopg2://``): dagster-postgres needs it (its
  ``NOTIFY`` fails on psycopg 3, the driver SQLAlchemy 2.1 picks for ``postgresql://``);
- MLflow's tables in the schema ``mlflow`` (created on first use): the tracking URI is the
  same URL with ``options=-csearch_path=mlflow``.

Both tools name a table ``runs`` (and keep an ``alembic_version``), hence the two schemas.
The tools' own configuration wins: an explicit ``MLFLOW_TRACKING_URI``, or a
``dagster.yaml`` that configures its own storage, is used as it is.

    python -m olmo_assets.lab.database dagster-home   # the instance folder to use
    python -m olmo_assets.lab.database mlflow-uri     # the tracking URI to use
    python -m olmo_assets.lab.database exec dagster dev ...   # a command on that instance
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import yaml

__all__ = [
    "DAGSTER_URL_ENV",
    "DATABASE_URL_ENV",
    "MLFLOW_SCHEMA",
    "POSTGRES_INSTANCE",
    "dagster_home",
    "database_url",
    "mlflow_tracking_uri",
    "redacted",
    "store_lock",
]

DATABASE_URL_ENV = "OLMO_LAB_DATABASE_URL"
DAGSTER_URL_ENV = "OLMO_LAB_DAGSTER_DATABASE_URL"
"""Set by :func:`dagster_home`: ``OLMO_LAB_DATABASE_URL`` with the psycopg2 driver."""
MLFLOW_SCHEMA = "mlflow"
"""The schema of MLflow's tables; Dagster's stay in the database's default schema."""
POSTGRES_INSTANCE = "postgres"
"""The folder, inside ``$DAGSTER_HOME``, of the instance that stores its state in PostgreSQL."""
INSTANCE_FILE = "dagster.yaml"
_STORAGE_KEYS = ("storage", "run_storage", "event_log_storage", "schedule_storage")


def redacted(url: str) -> str:
    """``url`` with its password (in the address or as a ``password=`` query parameter)
    replaced by ``***``, for messages and metadata."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    in_query = any(key.lower() == "password" for key, _ in query)
    if parts.password is None and not in_query:
        return url
    if parts.password is not None:
        host = parts.netloc.rsplit("@", 1)[1]
        parts = parts._replace(netloc=f"{parts.username}:***@{host}")
    if in_query:
        masked = [(k, "***" if k.lower() == "password" else v) for k, v in query]
        parts = parts._replace(query=urlencode(masked, safe="*"))
    return urlunsplit(parts)


def database_url() -> str | None:
    """``OLMO_LAB_DATABASE_URL`` (None when unset or empty), checked to be a PostgreSQL URL."""
    url = os.environ.get(DATABASE_URL_ENV, "").strip()
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme != "postgresql" or not parts.path.strip("/"):
        raise ValueError(
            f"{DATABASE_URL_ENV}={redacted(url)} is not a PostgreSQL database URL: write it as "
            "postgresql://user:password@host:port/database (or unset it for SQLite)"
        )
    if parts.username == MLFLOW_SCHEMA:
        # Dagster's connections search the schema named after their user first.
        raise ValueError(
            f"{DATABASE_URL_ENV}={redacted(url)}: a user named {MLFLOW_SCHEMA!r} would see "
            f"MLflow's tables (schema {MLFLOW_SCHEMA!r}) in Dagster's connections; use another user"
        )
    return url


def _with_schema(url: str, schema: str) -> str:
    """``url`` whose connections see only ``schema`` (libpq's ``options``)."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query["options"] = " ".join(filter(None, [query.get("options"), f"-csearch_path={schema}"]))
    return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote)))


def mlflow_tracking_uri(repo: Path) -> str:
    """``MLFLOW_TRACKING_URI`` if set; else the schema ``mlflow`` of ``OLMO_LAB_DATABASE_URL``
    if set; else SQLite in the repository (``.mlflow/mlflow.db``)."""
    explicit = os.environ.get("MLFLOW_TRACKING_URI")
    if explicit:
        return explicit
    url = database_url()
    if url is not None:
        return _with_schema(url, MLFLOW_SCHEMA)
    return f"sqlite:///{repo / '.mlflow' / 'mlflow.db'}"


def _search_path(url: str) -> str | None:
    options = dict(parse_qsl(urlsplit(url).query)).get("options", "")
    found = [o[len("-csearch_path=") :] for o in options.split() if o.startswith("-csearch_path=")]
    return found[-1] if found else None


@contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Hold a PostgreSQL advisory lock on the store ``uri`` until the block ends, after
    creating the schema its ``search_path`` names: processes that open a new store at once
    take turns creating its tables (a race there fails with duplicate keys)."""
    import psycopg
    from psycopg import sql

    parts = urlsplit(uri)
    key = int.from_bytes(hashlib.sha256(uri.encode()).digest()[:8], "big", signed=True)
    # libpq reads the URL; a SQLAlchemy driver suffix (postgresql+psycopg2) is not its own.
    with psycopg.connect(urlunsplit(parts._replace(scheme="postgresql")), autocommit=True) as db:
        db.execute("SELECT pg_advisory_lock(%s)", (key,))
        schema = _search_path(uri)
        if schema is not None:
            db.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        yield
    # Closing the connection releases the lock.


def _instance_config(home: Path) -> dict:
    path = home / INSTANCE_FILE
    if not path.is_file():
        return {}
    config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(config, dict):
        raise ValueError(f"{path} is not a YAML mapping: it cannot be a Dagster instance's config")
    return config


def dagster_home(repo: Path) -> Path:
    """The Dagster instance folder the lab uses: ``$DAGSTER_HOME``, else ``<repo>/.dagster``.

    With ``OLMO_LAB_DATABASE_URL`` set, and no storage configured in that folder's
    ``dagster.yaml`` (a user's own storage wins), it is the folder's ``postgres/``: its
    ``dagster.yaml`` (written here, rewritten when the original changes) is the original's
    settings with Dagster's storage on the database, at ``$OLMO_LAB_DAGSTER_DATABASE_URL``,
    which this sets in the environment (for this process and those it starts).
    """
    home = Path(os.environ.get("DAGSTER_HOME") or repo / ".dagster")
    if not home.is_absolute():
        raise ValueError(f"DAGSTER_HOME={home} must be an absolute path")
    url = database_url()
    if url is None:
        return home
    os.environ[DAGSTER_URL_ENV] = urlunsplit(urlsplit(url)._replace(scheme="postgresql+psycopg2"))
    config = _instance_config(home)
    if any(key in config for key in _STORAGE_KEYS):
        return home
    config["storage"] = {"postgres": {"postgres_url": {"env": DAGSTER_URL_ENV}}}
    text = (
        f"# Written by olmo_assets.lab.database from ../{INSTANCE_FILE}, with the storage on\n"
        f"# PostgreSQL ({DATABASE_URL_ENV}): edit that file, not this one.\n"
        + yaml.safe_dump(config, sort_keys=False)
    )
    derived = home / POSTGRES_INSTANCE
    path = derived / INSTANCE_FILE
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        derived.mkdir(parents=True, exist_ok=True)
        staged = path.with_name(f".{INSTANCE_FILE}.{os.getpid()}")
        staged.write_text(text, encoding="utf-8")
        os.replace(staged, path)  # processes starting at once never read half a file
    return derived


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    repo = Path(os.environ.get("OLMO_LAB_REPO") or Path.cwd()).resolve()
    if args == ["dagster-home"]:
        print(dagster_home(repo))
    elif args == ["mlflow-uri"]:
        print(mlflow_tracking_uri(repo))
    elif len(args) > 1 and args[0] == "exec":
        os.environ["DAGSTER_HOME"] = str(dagster_home(repo))
        os.environ["MLFLOW_TRACKING_URI"] = mlflow_tracking_uri(repo)
        os.execvp(args[1], args[1:])
    else:
        print("usage: python -m olmo_assets.lab.database {dagster-home|mlflow-uri|exec COMMAND...}")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
