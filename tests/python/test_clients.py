"""Clients nobody here wrote: pyarrow.flight for ingest, ADBC FlightSQL for queries."""

import json
import os
import subprocess
import tomllib

import pyarrow as pa
import pyarrow.flight as flight
import pytest


def push(addr, table, batches, stream_name=None, first_offset=0):
    """The README's pyarrow example: push batches, return the acks. With a
    stream name, the batches are numbered from `first_offset`."""
    client = flight.FlightClient(f"grpc://{addr}")
    descriptor = flight.FlightDescriptor.for_path(table)
    headers = [(b"x-weir-stream-name", stream_name.encode())] if stream_name else []
    options = flight.FlightCallOptions(headers=headers)
    writer, reader = client.do_put(descriptor, batches[0].schema, options=options)
    acks = [json.loads(reader.read().to_pybytes())]  # the ready ack
    for offset, batch in enumerate(batches, start=first_offset):
        writer.write_with_metadata(batch, json.dumps({"offset_id": offset}).encode())
        acks.append(json.loads(reader.read().to_pybytes()))
    writer.done_writing()
    writer.close()
    return acks


def sensors(first, rows):
    return pa.record_batch(
        {
            "id": pa.array(range(first, first + rows), pa.int64()),
            # pyarrow makes nanosecond timestamps; exact ones fit the table's microseconds.
            "ts": pa.array([1_700_000_000_000_000_000 + i * 1000 for i in range(rows)], pa.timestamp("ns")),
            "temp": pa.array([20.5] * rows),
            "site": pa.array(["north"] * rows, pa.large_string()),
        }
    )


def test_pyarrow_push_acks_and_sql(weir):
    weir.sql("CREATE TABLE sensors (id BIGINT NOT NULL, ts TIMESTAMP, temp DOUBLE, site VARCHAR)")
    acks = push(weir.addr, "sensors", [sensors(0, 3), sensors(3, 2)])
    assert acks == [
        {"ack_up_to_offset": -1, "ack_up_to_records": 0},
        {"ack_up_to_offset": 0, "ack_up_to_records": 3},
        {"ack_up_to_offset": 1, "ack_up_to_records": 5},
    ]
    assert weir.sql("SELECT count(*) AS n, min(ts) AS first FROM sensors") == (
        "n,first\n5,2023-11-14T22:13:20Z\n"
    )


def test_pyarrow_named_stream_resumes_exactly_once_after_a_restart(weir, tmp_path):
    weir.sql("CREATE TABLE sensors (id BIGINT NOT NULL, ts TIMESTAMP, temp DOUBLE, site VARCHAR)")
    acks = push(weir.addr, "sensors", [sensors(0, 3), sensors(3, 3)], stream_name="probe-1")
    assert acks[0]["ack_up_to_offset"] == -1
    assert weir.stop() == 0

    from conftest import Weir

    again = Weir(tmp_path / "data")
    try:
        # The producer does not know whether offset 1 landed: it resends it.
        acks = push(again.addr, "sensors", [sensors(3, 3), sensors(6, 3)], "probe-1", first_offset=1)
        assert [a["ack_up_to_offset"] for a in acks] == [1, 1, 2]
        assert again.sql("SELECT count(*) AS n, count(DISTINCT id) AS d FROM sensors") == "n,d\n9,9\n"
    finally:
        assert again.stop() == 0


def refused(addr, table, batches):
    """Pushes batches the server refuses; returns the acks before the error and the error."""
    client = flight.FlightClient(f"grpc://{addr}")
    writer, reader = client.do_put(flight.FlightDescriptor.for_path(table), batches[0].schema)
    acks = []
    with pytest.raises(pa.ArrowException) as error:  # INVALID_ARGUMENT arrives as ArrowInvalid
        for offset, batch in enumerate(batches):
            writer.write_with_metadata(batch, json.dumps({"offset_id": offset}).encode())
        writer.done_writing()
        while (ack := reader.read()) is not None:
            acks.append(json.loads(ack.to_pybytes()))
        writer.close()
    return acks, str(error.value)


def test_pyarrow_bad_schema_names_the_column(weir):
    weir.sql("CREATE TABLE sensors (id BIGINT NOT NULL, temp DOUBLE)")
    bad = pa.record_batch({"id": pa.array([1], pa.int64()), "temp": pa.array(["hot"])})
    acks, error = refused(weir.addr, "sensors", [bad])
    assert acks == []
    assert 'column "temp" has type Utf8, which cannot be stored losslessly as Float64' in error
    assert weir.sql("SELECT count(*) AS n FROM sensors") == "n\n0\n"


def test_pyarrow_bad_batch_is_refused_after_the_good_ones_are_acked(weir):
    weir.sql("CREATE TABLE sensors (id BIGINT NOT NULL, temp DOUBLE)")
    good = pa.record_batch({"id": pa.array([1, 2], pa.int64()), "temp": [0.5, 1.5]})
    bad = pa.record_batch({"id": pa.array([3, None], pa.int64()), "temp": [2.5, 3.5]})
    acks, error = refused(weir.addr, "sensors", [good, bad])
    assert acks == [
        {"ack_up_to_offset": -1, "ack_up_to_records": 0},
        {"ack_up_to_offset": 0, "ack_up_to_records": 2},
    ]
    assert 'batch offset_id 1: table "sensors": column "id" is NOT NULL but 1 of 2 values are null' in error
    assert weir.sql("SELECT count(*) AS n FROM sensors") == "n\n2\n"


def test_adbc_flightsql_queries_and_ddl(weir):
    import adbc_driver_flightsql.dbapi as dbapi

    with dbapi.connect(f"grpc://{weir.addr}") as conn:
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE readings (id BIGINT NOT NULL, v DOUBLE)")
    push(weir.addr, "readings", [pa.record_batch({"id": pa.array([1, 2, 3], pa.int64()), "v": [0.5, 1.5, 2.5]})])
    with dbapi.connect(f"grpc://{weir.addr}") as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT sum(v) AS total, count(*) AS n FROM readings")
            assert cur.fetchone() == (4.5, 3)


def test_adbc_catalog_metadata(weir):
    """What a BI tool asks first: server info, the catalog tree, a table's
    schema, the table types."""
    import adbc_driver_flightsql.dbapi as dbapi

    weir.sql("CREATE TABLE sensors (id BIGINT NOT NULL, ts TIMESTAMP, temp DOUBLE, site VARCHAR)")
    weir.sql("CREATE TABLE other_table (k VARCHAR)")
    with dbapi.connect(f"grpc://{weir.addr}") as conn:
        info = conn.adbc_get_info()
        assert info["vendor_name"] == "weir"
        with open(os.path.join(os.path.dirname(__file__), "../../Cargo.toml"), "rb") as f:
            version = tomllib.load(f)["workspace"]["package"]["version"]
        assert info["vendor_version"] == version

        assert conn.adbc_get_table_types() == ["TABLE"]

        catalogs = conn.adbc_get_objects(depth="catalogs").read_all().to_pylist()
        assert [c["catalog_name"] for c in catalogs] == ["datafusion"]
        schemas = conn.adbc_get_objects(depth="db_schemas").read_all().to_pylist()
        assert [s["db_schema_name"] for s in schemas[0]["catalog_db_schemas"]] == ["public"]
        tables = conn.adbc_get_objects(depth="tables").read_all().to_pylist()
        names = [t["table_name"] for t in tables[0]["catalog_db_schemas"][0]["db_schema_tables"]]
        assert names == ["other_table", "sensors"]
        # Filters are SQL LIKE patterns.
        filtered = conn.adbc_get_objects(depth="tables", table_name_filter="sen%").read_all().to_pylist()
        names = [t["table_name"] for t in filtered[0]["catalog_db_schemas"][0]["db_schema_tables"]]
        assert names == ["sensors"]
        columns = conn.adbc_get_objects(depth="all", table_name_filter="sensors").read_all().to_pylist()
        table = columns[0]["catalog_db_schemas"][0]["db_schema_tables"][0]
        assert [c["column_name"] for c in table["table_columns"]] == ["id", "ts", "temp", "site"]

        schema = conn.adbc_get_table_schema("sensors")
        assert schema.names == ["id", "ts", "temp", "site"]
        assert schema.field("id").type == pa.int64() and not schema.field("id").nullable
        assert schema.field("ts").type == pa.timestamp("us", tz="UTC")

        with conn.cursor() as cur:
            cur.execute("SELECT id, site FROM sensors")
            assert [d[0] for d in cur.description] == ["id", "site"]
            assert cur.fetchall() == []


def test_adbc_bulk_ingest(weir):
    """`adbc_ingest` (FlightSQL CommandStatementIngest): create, append,
    durable and queryable when it returns; replace is refused."""
    import adbc_driver_flightsql.dbapi as dbapi
    import adbc_driver_manager

    schema = pa.schema([pa.field("id", pa.int64(), nullable=False), ("name", pa.string())])
    data = pa.table({"id": pa.array([1, 2, 3], pa.int64()), "name": ["a", "b", "c"]}, schema=schema)
    with dbapi.connect(f"grpc://{weir.addr}") as conn:

        def ingest(table, mode):
            with conn.cursor() as cur:
                return cur.adbc_ingest(table, data, mode=mode)

        def query(sql):
            with conn.cursor() as cur:
                cur.execute(sql)
                return cur.fetchone()

        assert ingest("people", "create") == 3
        # Acked means visible: the rows are there the moment it returns.
        assert query("SELECT count(*), sum(id) FROM people") == (3, 6)
        assert ingest("people", "append") == 3
        assert ingest("people", "create_append") == 3
        assert query("SELECT count(*) FROM people") == (9,)
        with pytest.raises(adbc_driver_manager.Error, match="(?i)exists"):
            ingest("people", "create")
        with pytest.raises(adbc_driver_manager.Error, match="(?i)replace is not supported"):
            ingest("people", "replace")
        with pytest.raises(adbc_driver_manager.Error, match="(?i)replace is not supported"):
            ingest("fresh", "replace")
        with pytest.raises(adbc_driver_manager.Error, match="(?i)nope"):
            ingest("nope", "append")
        assert query("SELECT count(*) FROM people") == (9,)
        # A batch that does not fit fails; the ones before it stay, and the
        # error says so.
        bad = pa.record_batch([pa.array([None], pa.int64()), pa.array(["x"])], schema=schema)
        with conn.cursor() as cur:
            stream = pa.RecordBatchReader.from_batches(schema, [*data.to_batches(), bad])
            with pytest.raises(adbc_driver_manager.Error, match="3 rows of the batches before it"):
                cur.adbc_ingest("people", stream, mode="append")
        assert query("SELECT count(*) FROM people") == (12,)
    with pytest.raises(subprocess.CalledProcessError):
        weir.sql("SELECT * FROM fresh")
    # Another client sees them too.
    assert weir.sql("SELECT count(*) AS n FROM people").splitlines()[1] == "12"


# A query that runs for minutes unless stopped.
ENDLESS = "SELECT sum(value % 7) AS s FROM generate_series(1, 100000000000)"


def adbc_error(call):
    """The ADBC error `call` raises."""
    import adbc_driver_manager

    with pytest.raises(adbc_driver_manager.Error) as error:
        call()
    return error.value


def test_adbc_prepared_statements_and_inserts(weir):
    """Parameters (DataFusion's `$1`, `$2`) on a prepared statement run
    twice; `INSERT` one row at a time and with `executemany`, each durable
    and visible when it returns."""
    import adbc_driver_flightsql.dbapi as dbapi

    with dbapi.connect(f"grpc://{weir.addr}") as conn:
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE readings (id BIGINT NOT NULL, v DOUBLE, site VARCHAR)")
            cur.execute("INSERT INTO readings (id, v, site) VALUES (1, 0.5, 'north')")
            assert cur.fetchone() == (1,)
            cur.executemany(
                "INSERT INTO readings (id, v, site) VALUES ($1, $2, $3)",
                [(2, 1.5, "south"), (3, 2.5, "north"), (4, 3.5, "east")],
            )
            assert weir.sql("SELECT count(*) AS n, sum(v) AS total FROM readings") == "n,total\n4,8.0\n"

            query = "SELECT count(*) AS n, max(v) AS top FROM readings WHERE id <= $1 AND site = $2"
            cur.execute(query, parameters=(3, "north"))
            assert [d[0] for d in cur.description] == ["n", "top"]
            assert cur.fetchall() == [(2, 2.5)]
            cur.execute(query, parameters=(1, "north"))
            assert cur.fetchall() == [(1, 0.5)]
            cur.execute(query, parameters=(10, "east"))
            assert cur.fetch_arrow_table().to_pylist() == [{"n": 1, "top": 3.5}]


def test_adbc_errors_carry_their_codes(weir, tmp_path):
    import adbc_driver_flightsql.dbapi as dbapi
    from adbc_driver_manager import AdbcStatusCode as Code

    weir.sql("CREATE TABLE readings (id BIGINT NOT NULL, v DOUBLE)")
    with dbapi.connect(f"grpc://{weir.addr}") as conn:
        with conn.cursor() as cur:
            for sql, code, says in [
                ("SELEC 1", Code.INVALID_ARGUMENT, "SELEC"),
                ("SELECT * FROM nowhere", Code.INVALID_ARGUMENT, "nowhere"),
                ("SELECT nothing FROM readings", Code.INVALID_ARGUMENT, "nothing"),
                ("INSERT INTO readings (v) VALUES (1.0)", Code.INVALID_ARGUMENT, '"id"'),
                ("CREATE TABLE readings (id BIGINT)", Code.ALREADY_EXISTS, "readings"),
            ]:
                error = adbc_error(lambda: cur.execute(sql))
                assert error.status_code == code, (sql, error)
                assert says in str(error), (sql, error)
    assert weir.sql("SELECT count(*) AS n FROM readings") == "n\n0\n"

    from conftest import Weir

    slow = Weir(tmp_path / "slow", config="[limits]\nquery_timeout_ms = 500\n")
    try:
        with dbapi.connect(f"grpc://{slow.addr}") as conn:
            with conn.cursor() as cur:

                def run():
                    cur.execute(ENDLESS)
                    cur.fetchall()

                error = adbc_error(run)
                assert error.status_code == Code.TIMEOUT, error
                assert "limits.query_timeout_ms" in str(error)
    finally:
        assert slow.stop() == 0


def test_adbc_cancel_stops_a_long_query(weir):
    import threading
    import time

    import adbc_driver_flightsql.dbapi as dbapi
    from adbc_driver_manager import AdbcStatusCode as Code

    with dbapi.connect(f"grpc://{weir.addr}") as conn:
        with conn.cursor() as cur:
            started = time.monotonic()
            cur.execute(ENDLESS)
            threading.Timer(0.5, cur.adbc_cancel).start()
            error = adbc_error(cur.fetchall)
            assert error.status_code == Code.CANCELLED, error
            assert time.monotonic() - started < 30
        # The server is fine and answers the next query.
        with conn.cursor() as cur:
            cur.execute("SELECT 41 + 1")
            assert cur.fetchone() == (42,)


def test_sqlalchemy_datafusion_dialect(weir):
    """SQLAlchemy through `flightsql-dbapi`'s DataFusion dialect, as a BI
    tool such as Superset connects: reflection, then Core queries."""
    import sqlalchemy as sa

    weir.sql("CREATE TABLE sensors (id BIGINT NOT NULL, ts TIMESTAMP, temp DOUBLE, site VARCHAR)")
    push(weir.addr, "sensors", [sensors(0, 3)])
    weir.sql("INSERT INTO sensors (id, site) VALUES (10, 'south'), (11, 'south')")
    host, port = weir.addr.rsplit(":", 1)
    # The dialect's optional features: keys through GetPrimaryKeys, and
    # bound parameters through prepared statements.
    features = "feature-sqlalchemy-primary-keys=on&feature-sqlalchemy-prepared-statements=on"
    engine = sa.create_engine(f"datafusion://{host}:{port}?insecure=true&{features}")
    inspector = sa.inspect(engine)
    assert inspector.get_schema_names() == ["public"]
    assert inspector.get_table_names() == ["sensors"]
    columns = inspector.get_columns("sensors")
    assert [(c["name"], c["nullable"]) for c in columns] == [
        ("id", False),
        ("ts", True),
        ("temp", True),
        ("site", True),
    ]
    assert inspector.get_pk_constraint("sensors")["constrained_columns"] == []

    table = sa.Table("sensors", sa.MetaData(), autoload_with=engine)
    with engine.connect() as conn:
        by_site = sa.select(table.c.site, sa.func.count().label("n")).group_by(table.c.site).order_by(table.c.site)
        assert conn.execute(by_site).fetchall() == [("north", 3), ("south", 2)]
        south = sa.select(sa.func.max(table.c.id)).where(table.c.site == "south")
        assert conn.execute(south).scalar() == 11
