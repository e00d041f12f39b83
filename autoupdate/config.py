"""YAML -> validated settings. Every problem is reported with its key path.

Sections belong to roles: `cluster` (workload manager), `repository`, `nodes` (safety lists),
`detectors`, `rollout`, `apply`, `reboot`, `verify`, `power`, `windows`, `notify`, `metrics`,
`control`. Unknown keys are errors (a typo must not silently disable a safety rule).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
    AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator,
)

from . import windows
from .model import ChangeClass
from .nodeset import HostlistError, expand


class ConfigError(Exception):
    """Invalid configuration. `problems` holds one 'key.path: message' line per problem."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))

    def lines(self) -> list[str]:
        return [f"{self.source}: {p}" for p in self.problems]


def _hostlist(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        expand(value)
    except HostlistError as exc:
        raise ValueError(str(exc)) from None
    return value


Hostlist = Annotated[str, AfterValidator(_hostlist)]
_AMOUNT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")


def _amount(value: Any) -> Any:
    """A count (3) or a percentage ('10%')."""
    if isinstance(value, bool):
        raise ValueError("expected a count or a percentage such as '10%'")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("must not be negative")
        return value
    if isinstance(value, str):
        m = _AMOUNT.match(value)
        if m and float(m.group(1)) <= 100:
            return value.strip()
        if value.strip().isdigit():
            return int(value)
    raise ValueError(f"expected a count or a percentage such as '10%', got {value!r}")


Amount = Annotated[Union[int, str], AfterValidator(_amount)]


def resolve_amount(amount: int | str, total: int, minimum: int = 0) -> int:
    """'10%' of 32 -> 3; a count stays as it is. Percentages round down but keep `minimum`."""
    if isinstance(amount, int):
        return amount
    pct = float(amount.rstrip("% "))
    return max(minimum, int(total * pct / 100.0))


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- cluster -----------------------------------------------------------------------------------

class SimSettings(Section):
    partitions: dict[str, Hostlist] = Field(
        default_factory=lambda: {"batch": "node[001-016]", "gpu": "node[017-032]"})
    reboot_seconds: float = Field(300.0, gt=0)
    job_seconds: tuple[float, float] = (600.0, 7200.0)  # random job length range
    jobs_per_node: float = Field(1.5, ge=0)  # initial queue depth, jobs per node
    fail_nodes: Hostlist = ""  # these never come back from a reboot
    seed: int = 1
    speed: float = Field(1.0, gt=0)  # simulated seconds per wall second


class SlurmSettings(Section):
    bin_dir: str = ""  # where scontrol/sinfo/squeue live; empty: PATH
    command_timeout: float = Field(30.0, gt=0)
    use_json: Literal["auto", "yes", "no"] = "auto"
    reboot_nextstate: Literal["DOWN", "RESUME"] = "DOWN"


class ClusterSettings(Section):
    backend: Literal["slurm", "pyslurm", "sim"] = "slurm"
    slurm: SlurmSettings = SlurmSettings()
    sim: SimSettings = SimSettings()


# --- repository --------------------------------------------------------------------------------

class RepositorySettings(Section):
    url: str  # local path or URL of the configuration repository
    branch: str = "main"
    workdir: str = ""  # clone location; empty: <state_dir>/repo
    fetch_interval: float = Field(60.0, gt=0)


# --- nodes -------------------------------------------------------------------------------------

class NodeLists(Section):
    blacklist: Hostlist = ""  # never touched
    whitelist: Hostlist | None = None  # if set, only these are managed
    canaries: Hostlist = ""
    hypervisors: dict[str, Hostlist] = Field(default_factory=dict)  # hypervisor -> its VM nodes


# --- detectors ---------------------------------------------------------------------------------

class PathRule(Section):
    glob: str
    change: Literal["hot", "drain", "good"] = Field(alias="class")
    nodes: Hostlist | None = None  # default: every managed node

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @property
    def klass(self) -> ChangeClass:
        return ChangeClass.parse(self.change)


class PathRulesDetector(Section):
    type: Literal["path_rules"]
    rules: list[PathRule] = Field(default_factory=list)
    # Optional file in the repository with more rules (same format); unreadable -> ERROR.
    rules_file: str = ""


DetectorSettings = Annotated[Union[PathRulesDetector], Field(discriminator="type")]


# --- rollout -----------------------------------------------------------------------------------

class RolloutSettings(Section):
    canary_count: int = Field(2, ge=0)
    soak_seconds: float = Field(600.0, ge=0)
    max_unavailable: Amount | dict[str, Amount] = "10%"  # per partition; a map may name each
    max_in_flight: int = Field(0, ge=0)  # 0: only max_unavailable limits
    max_attempts: int = Field(5, ge=1)
    retry_backoff_seconds: float = Field(60.0, ge=0)
    retry_backoff_max_seconds: float = Field(3600.0, ge=0)
    failure_budget: Amount = 2  # halt when this many nodes have failed for good
    drain_strategy: Literal["drain", "reservation"] = "drain"
    # Reservation strategy: reserve this long after the node's expected idle time.
    reservation_seconds: float = Field(3600.0, gt=0)

    def unavailable_limit(self, partition: str, size: int) -> int:
        amount = self.max_unavailable
        if isinstance(amount, dict):
            amount = amount.get(partition, amount.get("default", "10%"))
        return resolve_amount(amount, size, minimum=1)


# --- apply / reboot / verify / power -----------------------------------------------------------

class ApplySettings(Section):
    backend: Literal["none", "sim", "command"] = "none"
    command: list[str] = Field(default_factory=list)  # argv; {nodes} {target} {class} expanded
    timeout: float = Field(3600.0, gt=0)


class RebootSettings(Section):
    strategy: Literal["slurm", "sim", "none"] = "slurm"
    timeout: float = Field(1800.0, gt=0)  # from issuing the reboot to the node being back


class VerifySettings(Section):
    boot_time: bool = True  # the node must report a newer boot time after a reboot
    health_check: list[str] = Field(default_factory=list)  # argv; {node} expanded; 0 = healthy
    timeout: float = Field(300.0, gt=0)


# --- windows / notify / metrics ----------------------------------------------------------------

def _checked(parse, normalise=str):
    """An AfterValidator running a windows.parse_* function (its ValueError is the message)."""
    def check(value: Any) -> Any:
        parse(value)
        return normalise(value)
    return AfterValidator(check)


def _blackout_text(value: Any) -> str:
    first, last = windows.parse_blackout(value)
    return first.isoformat() if first == last else f"{first.isoformat()}..{last.isoformat()}"


def _window_start(value: Any) -> str:
    if windows.parse_clock(value) >= 24 * 60:
        raise ValueError("a window cannot start at 24:00 (use '00:00')")
    return str(value).strip()


ClockTime = Annotated[Any, _checked(windows.parse_clock, lambda v: str(v).strip())]
Blackout = Annotated[Any, _checked(windows.parse_blackout, _blackout_text)]
Days = Annotated[Union[str, list[str]], _checked(windows.parse_days, lambda v: v)]
TimeZone = Annotated[str, _checked(windows.parse_zone)]


class WindowSpanSettings(Section):
    days: Days = "daily"  # mon-fri | sat,sun | fri-mon | daily, or a list
    start: Annotated[Any, AfterValidator(_window_start)]  # 'HH:MM' local time
    end: ClockTime  # 'HH:MM'; not after start: the window ends the next day


class ClassWindowSettings(Section):
    timezone: TimeZone | None = None  # None: windows.timezone
    open: list[WindowSpanSettings] | None = None  # None: any time (outside blackouts)
    blackout: list[Blackout] = Field(default_factory=list)  # 'YYYY-MM-DD' or 'A..B' (inclusive)


class WindowsSettings(Section):
    timezone: TimeZone = "UTC"
    blackout: list[Blackout] = Field(default_factory=list)  # for every class
    hot: ClassWindowSettings = ClassWindowSettings()
    drain: ClassWindowSettings = ClassWindowSettings()


class SlackSettings(Section):
    """Secrets never live in the YAML: a file (relative names: $CREDENTIALS_DIRECTORY) or env."""

    mode: Literal["bot", "webhook"] = "bot"
    channel: str = ""  # bot mode: channel id (C0123...) or #name
    token_file: str = ""  # bot token file; a relative name is looked up in $CREDENTIALS_DIRECTORY
    token_env: str = "SLACK_BOT_TOKEN"  # used when token_file is empty
    webhook_url_file: str = ""  # webhook mode: file holding the incoming-webhook URL
    webhook_url_env: str = "SLACK_WEBHOOK_URL"
    base_url: str = ""  # Web API base; empty: https://slack.com/api/
    mention: str = ""  # user group id (S0123...) mentioned on events that need a human
    timeout: float = Field(10.0, gt=0)  # per HTTP request
    retry_seconds: float = Field(300.0, ge=0)  # keep retrying a message this long, then drop it
    queue_size: int = Field(1000, ge=1)  # messages waiting beyond this are dropped (logged)

    @model_validator(mode="after")
    def _needs_channel(self) -> "SlackSettings":
        if self.mode == "bot" and not self.channel:
            raise ValueError("channel: required in bot mode")
        return self


class NotifySettings(Section):
    log: bool = True
    slack: SlackSettings | None = None  # absent: no Slack


def _listen_address(value: str) -> str:
    if value:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"expected host:port such as '127.0.0.1:9105', got {value!r}")
    return value


class MetricsSettings(Section):
    listen: Annotated[str, AfterValidator(_listen_address)] = ""  # host:port; empty: off


# --- control -----------------------------------------------------------------------------------

class ControlSettings(Section):
    state_dir: str = "/var/lib/autoupdate"
    pause_file: str = ""  # empty: <state_dir>/pause
    poll_interval: float = Field(15.0, gt=0)
    log_format: Literal["console", "json"] = "console"
    log_level: Literal["debug", "info", "warning", "error"] = "info"


class Settings(Section):
    cluster: ClusterSettings = ClusterSettings()
    repository: RepositorySettings
    nodes: NodeLists = NodeLists()
    detectors: list[DetectorSettings] = Field(default_factory=list)
    rollout: RolloutSettings = RolloutSettings()
    apply: ApplySettings = ApplySettings()
    reboot: RebootSettings = RebootSettings()
    verify: VerifySettings = VerifySettings()
    windows: WindowsSettings = WindowsSettings()
    notify: NotifySettings = NotifySettings()
    metrics: MetricsSettings = MetricsSettings()
    control: ControlSettings = ControlSettings()

    @property
    def state_dir(self) -> Path:
        return Path(self.control.state_dir)

    @property
    def pause_file(self) -> Path:
        return Path(self.control.pause_file) if self.control.pause_file else self.state_dir / "pause"

    @property
    def repo_workdir(self) -> Path:
        return Path(self.repository.workdir) if self.repository.workdir else self.state_dir / "repo"


def _loc(loc: tuple) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif item in ("function-after", "tagged-union") or str(item).startswith(("function-", "union[", "int", "str", "dict[")):
            continue
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts) or "(top level)"


def _problems(exc: ValidationError) -> list[str]:
    out = []
    for err in exc.errors():
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        out.append(f"{_loc(err['loc'])}: {msg}")
    return sorted(set(out))


def parse_config(data: Any, source: str = "<config>") -> Settings:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(source, ["(top level): expected a mapping of sections"])
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, _problems(exc)) from None


def load_config(path: str | Path) -> Settings:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read: {exc.strerror or exc}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(str(path), [f"{where}invalid YAML: {getattr(exc, 'problem', exc)}"]) from None
    return parse_config(data, str(path))
