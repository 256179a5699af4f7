"""The one settings model. Read from `FLOTILLA_*` variables once, in each service's `main`."""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _env(name: str) -> AliasChoices:
    # Units live in field names (claim_timeout_s) while the public variable keeps the short
    # name the architecture documents (FLOTILLA_CLAIM_TIMEOUT).
    return AliasChoices(f"FLOTILLA_{name}", f"flotilla_{name.lower()}")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLOTILLA_", extra="ignore", populate_by_name=True)

    mongo_url: str = "mongodb://127.0.0.1:27017/"
    mongo_db: str = "flotilla"
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    exchange_prefix: str = "exchange/taskcluster-queue/v1/"

    root_url: str = "http://127.0.0.1:8080"
    queue_host: str = "127.0.0.1"
    queue_port: int = Field(8180, ge=1, le=65535)  # internal: the ingress is the root URL

    root_client_id: str = "static/flotilla/root"
    # Empty means "no root client": every request is then anonymous or a stored client.
    root_access_token: str = ""
    # Key for encrypting client access tokens at rest (Hawk needs the secret itself, so
    # tokens cannot be hashed). `make up` generates one; the default is for tests only.
    secret_key: str = "flotilla-development-secret-key-change-me"

    claim_timeout_s: int = Field(1200, ge=1, validation_alias=_env("CLAIM_TIMEOUT"))
    # claimWork's long poll (upstream: 20 s). An idle worker calls the queue this often.
    claim_work_wait_s: float = Field(20.0, gt=0, validation_alias=_env("CLAIM_WORK_WAIT"))
    # A worker's lastDateActive is stamped at most this often per queue replica (upstream:
    # 30 min). The provisioner allows this much staleness, plus one claimWork long poll,
    # before it calls a worker inactive (lifecycle.queueInactivityTimeout).
    worker_activity_resolution_s: float = Field(
        60.0, gt=0, validation_alias=_env("WORKER_ACTIVITY_RESOLUTION")
    )
    # "mongodb": the bytes in MongoDB, in chunks addressed by `_id` (not GridFS, whose
    # layout it borrows); "gridfs" is that store's old name, still accepted.
    artifact_store: Literal["mongodb", "gridfs", "s3"] = "mongodb"

    @field_validator("artifact_store")
    @classmethod
    def _old_store_name(cls, value: str) -> str:
        return "mongodb" if value == "gridfs" else value

    # The largest artifact (bytes): a declared contentLength above it is refused at
    # createArtifact (any store); an upload to the embedded store growing past it is cut
    # off (S3 bounds an undeclared one only by its own 5 GB).
    artifact_max_bytes: int = Field(5 * 1024**3, ge=1, validation_alias=_env("ARTIFACT_MAX_BYTES"))
    # Public base URL of the gridfs store's signed artifact URLs (a queue replica or the
    # load balancer in front of them); None means root_url.
    artifact_url_base: str | None = None
    # The s3 store. No endpoint means AWS itself; set one for MinIO, moto or the like.
    s3_endpoint_url: str | None = None
    s3_bucket: str = "flotilla-artifacts"
    s3_region: str = "us-east-1"
    # Explicit credentials; when None, boto3's usual chain (instance role, ...) applies.
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None
    log_level: str = "INFO"
    # The dependency-resolver's durable queue is kept however long no resolver runs, so no
    # resolution is ever lost. Throw-away deployments (tests, benchmarks: one database
    # each) set this so RabbitMQ drops their queue some seconds after they stop.
    resolver_queue_expires_s: float | None = Field(
        None, gt=0, validation_alias=_env("RESOLVER_QUEUE_EXPIRES")
    )
    # Each task queue's pending runs wait in a durable RabbitMQ queue. Throw-away
    # deployments (tests, benchmarks) set this so RabbitMQ drops an unused one after it.
    pending_queue_expires_s: float | None = Field(
        None, gt=0, validation_alias=_env("PENDING_QUEUE_EXPIRES")
    )
    # The safety net behind task-pending wake-ups: this often, a queue replica asks
    # RabbitMQ whether a task queue with waiting claimWork calls has runs ready. 0: off
    # (tests that must prove the push path itself).
    claim_sweep_interval_s: float = Field(2.0, ge=0, validation_alias=_env("CLAIM_SWEEP_INTERVAL"))
    # How often a waiting claimWork asks whether its client hung up (a wake-up asks too).
    claim_hangup_check_s: float = Field(1.0, gt=0, validation_alias=_env("CLAIM_HANGUP_CHECK"))
    # The index service (services.index): its API, and how long RabbitMQ keeps its durable
    # queue of task-completed events once no index service consumes it (None: for ever;
    # throw-away deployments set it, like FLOTILLA_RESOLVER_QUEUE_EXPIRES).
    index_host: str = "127.0.0.1"
    index_port: int = Field(8182, ge=1, le=65535)
    index_queue_expires_s: float | None = Field(
        None, gt=0, validation_alias=_env("INDEX_QUEUE_EXPIRES")
    )
    # The purge-cache service (services.purge_cache).
    purge_cache_host: str = "127.0.0.1"
    purge_cache_port: int = Field(8183, ge=1, le=65535)
    # The provisioner (services.provisioner): its Worker-Manager API, its loop, and where
    # its `docker` provider keeps each worker process's directory and log.
    provisioner_host: str = "127.0.0.1"
    provisioner_port: int = Field(8181, ge=1, le=65535)
    provisioner_interval_s: float = Field(10.0, gt=0, validation_alias=_env("PROVISIONER_INTERVAL"))
    provisioner_lease_s: float = Field(15.0, gt=0, validation_alias=_env("PROVISIONER_LEASE"))
    provisioner_work_root: str = "/tmp/flotilla-provisioner"
    # The `docker` provider's container form: the worker image (`make images` builds it)
    # and the engine (its unix socket is mounted into each worker container).
    provisioner_worker_image: str = "flotilla/docker-worker:latest"
    provisioner_docker_url: str = "unix:///var/run/docker.sock"
    # A terminated docker worker gets SIGTERM (it reports its tasks worker-shutdown), then
    # SIGKILL after this long.
    provisioner_worker_grace_s: float = Field(
        30.0, ge=0, validation_alias=_env("PROVISIONER_WORKER_GRACE")
    )
    # The `aws` provider's EC2 endpoint (None: AWS itself; tests point it at moto) and
    # explicit credentials (None: boto3's usual chain).
    aws_endpoint_url: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = None
    # The object service (services.object): where it listens, and the base URL the queue
    # calls it at (its own port serves `/api/object/v1/`); None means root_url, i.e.
    # through the ingress.
    object_host: str = "127.0.0.1"
    object_port: int = Field(8184, ge=1, le=65535)
    object_url: str | None = None
    # Slow clients: request headers must be complete this long after a connection opens
    # (or after its previous response); a body must keep up `http_body_min_rate` bytes/s
    # on average once `http_body_grace` has passed. Long polls are unaffected.
    http_header_timeout_s: float = Field(60.0, gt=0, validation_alias=_env("HTTP_HEADER_TIMEOUT"))
    http_body_grace_s: float = Field(30.0, gt=0, validation_alias=_env("HTTP_BODY_GRACE"))
    http_body_min_rate_bytes_s: float = Field(
        1024.0, gt=0, validation_alias=_env("HTTP_BODY_MIN_RATE")
    )
    # The web console (services.web): where it listens (the ingress routes `/` to it).
    web_host: str = "127.0.0.1"
    web_port: int = Field(8185, ge=1, le=65535)
    # Every background loop's failure budget: this many failed passes in a row, failing
    # for at least this long, and the process exits 70 for its supervisor to restart.
    loop_failures: int = Field(5, ge=1, validation_alias=_env("LOOP_FAILURES"))
    loop_failing_s: float = Field(30.0, ge=0, validation_alias=_env("LOOP_FAILING"))
    # Test hook only: "exit-after-commit" makes the queue exit right after a state change is
    # stored and before its events go out (the crash test proves the outbox relays them).
    fault_injection: str = ""
    # Benchmark hook (shared.commandstats): each process writes its counts of MongoDB
    # commands and AMQP operations into this directory. Unset: nothing is counted.
    command_stats_dir: str | None = None


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment, with explicit overrides (tests use these)."""
    return Settings(**overrides)  # type: ignore[arg-type]
