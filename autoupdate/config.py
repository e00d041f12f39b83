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
    AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator,
    model_validator,
)

from . import windows
from .model import ChangeClass
from .nodeset import HostlistError, expand
from .textfile import read_text


class ConfigError(Exception):
    """Invalid configuration. `problems` holds one 'key.path: message' line per problem."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))

    def lines(self) -> list[str]:
        return [f"{self.source}: {p}" for p in self.problems]


def _hostlist_text(value: Any) -> Any:
    """A YAML list of hostlists (`[login1, "ctl[1-2]"]`) is their union, as one hostlist."""
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return ",".join(value)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"expected a hostlist such as 'node[01-04],gpu1' or a list of them, got {value!r}")
    return value


def _names(value: str) -> list[str]:
    try:
        return expand(value)
    except HostlistError as exc:
        raise ValueError(str(exc)) from None


def _hostlist(value: str | None) -> str | None:
    if value is not None:
        _names(value)
    return value


def _node_name(value: str) -> str:
    """A key that is one node (a hypervisor), not a hostlist: 'hv[1-2]' would be a name no node has."""
    if _names(value) != [value]:
        raise ValueError(f"expected one node name, got {value!r}")
    return value


Hostlist = Annotated[str, BeforeValidator(_hostlist_text), AfterValidator(_hostlist)]
NodeName = Annotated[str, AfterValidator(_node_name)]
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
    slurm_conf: str = ""  # SLURM_CONF for every Slurm command; empty: Slurm's own default
    reservation_user: str = "root"  # the user named in maintenance reservations (users=)


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
    hypervisors: dict[NodeName, Hostlist] = Field(default_factory=dict)  # hypervisor -> its VM nodes

    @field_validator("whitelist")
    @classmethod
    def _whitelist_names_nodes(cls, value: str | None) -> str | None:
        # `whitelist: ""` reads as "no whitelist" but would mean "manage no node": say which.
        if value is not None and not expand(value):
            raise ValueError("empty, so no node would be managed: leave the key out to manage every "
                             "node, or name the nodes (to stop for a while: `autoupdate pause`)")
        return value


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


class _AnsibleDetector(Section):
    playbook: str = ""  # empty: apply.ansible.playbook
    inventory: str = ""  # empty: apply.ansible.inventory
    timeout: float = Field(900.0, gt=0)  # per ansible-playbook run


class TagsDetector(_AnsibleDetector):
    """Affected plays/roles/tasks and their hot/drain tags (apply.ansible.tags)."""

    type: Literal["tags"]
    syntax_check: bool = True  # ansible-playbook --syntax-check on the new commit; failing: ERROR
    ignore: list[str] = Field(default_factory=list)  # globs of files left to other detectors
    outside: Literal["drain", "ignore"] = "drain"  # a changed file the playbook does not use


class AnsibleCheckDetector(_AnsibleDetector):
    """ansible-playbook --check --diff on the managed nodes: what would change, by task tags."""

    type: Literal["ansible_check"]
    interval: float = Field(0.0, ge=0)  # seconds between drift checks of the current commit; 0: off
    unreachable: Literal["drain", "error"] = "drain"  # a host the check could not reach


class AnsibleSyntaxDetector(_AnsibleDetector):
    type: Literal["ansible_syntax"]


class ImageManifestDetector(Section):
    type: Literal["image_manifest"]
    path: str = "images.yml"  # in the repository: {groups: {name: {nodes, image, version, mode}}}
    mode: Literal["reload", "reprovision"] = "reload"  # when a group names none


class ExternalDetector(Section):
    type: Literal["external"]
    name: str = "external"  # shown in plan and notifications
    command: list[str] = Field(min_length=1)  # argv; gets --old SHA --new SHA --repo PATH
    timeout: float = Field(300.0, gt=0)


DetectorSettings = Annotated[Union[PathRulesDetector, TagsDetector, AnsibleCheckDetector,
                                   AnsibleSyntaxDetector, ImageManifestDetector, ExternalDetector],
                             Field(discriminator="type")]


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

class AnsibleTagNames(Section):
    hot: str = "hotchange"  # tasks/roles/plays with this tag may be applied live
    drain: str = "drainchange"  # ... with this one need a drained node (untagged: drain too)


class AnsibleSettings(Section):
    playbook: str = "site.yml"  # relative to the repository checkout, or absolute
    inventory: str = "inventory"  # relative to the checkout, or absolute; host names = node names
    forks: int = Field(10, ge=1)
    vault_password_file: str = ""  # passed as --vault-password-file; empty: no vault
    tags: AnsibleTagNames = AnsibleTagNames()
    hot_tags_only: bool = True  # HOT runs only the tasks tagged tags.hot (--tags)
    extra_args: list[str] = Field(default_factory=list)  # more ansible-playbook arguments
    timeout: float = Field(3600.0, gt=0)  # per ansible-playbook run
    ansible_playbook: str = ""  # program; empty: next to this Python, else PATH


class ApplySettings(Section):
    backend: Literal["none", "sim", "command", "image", "ansible"] = "none"
    ansible: AnsibleSettings = AnsibleSettings()
    command: list[str] = Field(default_factory=list)  # argv; {nodes} {target} {class} expanded
    timeout: float = Field(3600.0, gt=0)


class RebootSettings(Section):
    strategy: Literal["slurm", "sim", "none", "image", "ipmi", "soft-then-hard"] = "slurm"
    timeout: float = Field(1800.0, gt=0)  # from issuing the reboot to the node being back
    # ipmi and soft-then-hard (need a `power` section): how the BMC reboots the node.
    power_action: Literal["reset", "cycle"] = "reset"
    boot_device: Literal["", "network", "disk"] = ""  # set first (network: reprovision); "": leave
    boot_persistent: bool = False  # the boot device for every boot, not only the next one
    # soft-then-hard: this argv ({node} replaced) asks the OS to reboot; if the node has not come
    # back within soft_timeout, a hard reset through the BMC; still down hard_timeout later: failed.
    soft_command: list[str] = Field(default_factory=lambda: ["ssh", "{node}", "systemctl", "reboot"])
    soft_command_timeout: float = Field(30.0, gt=0)
    soft_timeout: float = Field(300.0, gt=0)
    hard_timeout: float = Field(600.0, gt=0)


class PowerSettings(Section):
    """The nodes' BMCs (IPMI-over-LAN). Credentials never live here: a file or the environment."""

    backend: Literal["none", "ipmi"] = "none"
    address: str = "{node}-bmc"  # BMC host per node; {node} is replaced
    addresses: dict[str, str] = Field(default_factory=dict)  # node -> "host" or "host:port"
    port: int = Field(623, ge=1, le=65535)  # when the address names no port
    credentials_file: str = ""  # 'user:password' line or YAML/JSON {username, password}
    username_env: str = "AUTOUPDATE_BMC_USER"  # used when no credentials_file is set
    password_env: str = "AUTOUPDATE_BMC_PASSWORD"
    timeout: float = Field(20.0, gt=0)  # deadline of every single BMC call (seconds)
    concurrency: int = Field(8, ge=1)  # BMC calls in flight at once


class RevisionCheckSettings(Section):
    """What a node booted must match the rollout's target commit before it is resumed."""

    source: Literal["none", "command", "feature", "extra"] = "none"
    command: list[str] = Field(default_factory=list)  # source=command: argv, {node}; stdout = sha
    feature_prefix: str = "rev_"  # source=feature: the node's feature 'rev_<sha>'
    extra_key: str = ""  # source=extra: key in Extra ('key=<sha>' or JSON); "": the whole field
    min_length: int = Field(7, ge=4, le=40)  # shortest abbreviated sha accepted
    timeout: float = Field(30.0, gt=0)  # source=command

    @model_validator(mode="after")
    def _command_given(self):
        if self.source == "command" and not self.command:
            raise ValueError("source 'command' needs a command (argv list)")
        return self


class VerifySettings(Section):
    boot_time: bool = True  # the node must report a newer boot time after a reboot
    health_check: list[str] = Field(default_factory=list)  # argv; {node} expanded; 0 = healthy
    timeout: float = Field(300.0, gt=0)
    revision: RevisionCheckSettings = RevisionCheckSettings()


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


# --- images (provisioning back-ends that decide what a node boots) -----------------------------

class ImageGroupSettings(Section):
    mode: Literal["reload", "reprovision"] = "reload"  # reload: set image + reboot; reprovision:
    # network boot + reinstall (with the back-end's wipe option where it has one)


class BootedSettings(Section):
    """Where a node reports the image it booted (checked before it is resumed)."""

    source: Literal["extra", "features", "command", "none"] = "extra"
    key: str = "image"  # extra: 'image=NAME' token or JSON key; features: 'image:NAME' / 'image=NAME'
    command: list[str] = Field(default_factory=list)  # source=command: argv, {node}; stdout = image


class ScyldSettings(Section):
    command: str = "scyld-nodectl"
    reprovision_boot_style: str = "disked"  # _boot_style for reprovision: the partition is wiped
    reboot: Literal["clusterware", "soft-then-hard"] = "clusterware"  # clusterware: its own
    # soft-then-hard `reboot`; soft-then-hard: `reboot --soft`, then `--hard` after the soft timeout


class CsmBssSettings(Section):
    url: str = "https://api-gw-service-nmn.local/apis/bss/boot/v1"
    token_file: str = ""  # bearer token (read at each request, never logged)
    ca_bundle: str = ""  # CA file for TLS; empty: the system's
    xnames: dict[str, str] = Field(default_factory=dict)  # node -> xname
    xname_regex: str = ""  # else: regex on the node name with named groups ...
    xname_template: str = "{node}"  # ... filled into this ('x3000c0s{slot}b0n0'); default: node name
    s3_prefix: str = "s3://boot-images"  # artifacts: <prefix>/<image id>/{kernel,initrd,rootfs}


class ExostellarSettings(Section):
    url: str = "http://127.0.0.1:5000"  # management server
    token_file: str = ""  # optional bearer token
    image_name: str = ""  # the Exostellar image the managed nodes boot
    image_names: dict[Hostlist, str] = Field(default_factory=dict)  # hostlist -> image name
    snapshot_key: str = ""  # JSON key of the snapshot id; empty: the one field holding 'snap-...'
    recycle: bool = True  # drain + recycle nodes still on the old image (else: natural turnover)


class WarewulfSettings(Section):
    command: str = "wwctl"
    image_flag: Literal["auto", "image", "container"] = "auto"  # auto: --image from 4.6 on
    reboot: list[str] = Field(default_factory=lambda: ["power", "cycle"])  # wwctl args + nodes


class CommandImageSettings(Section):
    """argv templates, no shell. {nodes} (comma list), {hostlist}, {node}, {image}, {mode}."""

    set: list[str] = Field(default_factory=list)
    set_reprovision: list[str] = Field(default_factory=list)  # empty: `set`
    get: list[str] = Field(default_factory=list)  # with {node}: stdout is the image
    get_format: Literal["lines", "json"] = "lines"  # lines: 'NODE IMAGE'; json: {node: image}
    reboot: list[str] = Field(default_factory=list)
    hard_reboot: list[str] = Field(default_factory=list)


class ImagesSettings(Section):
    backend: Literal["", "scyld", "csm_bss", "exostellar", "warewulf", "command"] = ""
    timeout: float = Field(120.0, gt=0)  # per back-end command or HTTP request
    groups: dict[str, ImageGroupSettings] = Field(default_factory=dict)  # image group -> mode
    booted: BootedSettings = BootedSettings()
    soft_reboot_timeout: float = Field(300.0, gt=0)  # image rebooter: then the hard one
    scyld: ScyldSettings = ScyldSettings()
    csm_bss: CsmBssSettings = CsmBssSettings()
    exostellar: ExostellarSettings = ExostellarSettings()
    warewulf: WarewulfSettings = WarewulfSettings()
    command: CommandImageSettings = CommandImageSettings()

    def mode_for(self, group: str, default: str = "") -> str:
        if group in self.groups:
            return self.groups[group].mode
        return default or "reload"


# --- control -----------------------------------------------------------------------------------

class ControlSettings(Section):
    state_dir: str = "/var/lib/autoupdate"
    pause_file: str = ""  # empty: <state_dir>/pause
    poll_interval: float = Field(15.0, gt=0)
    # While a node reboots: looked at when it is due back (learnt from the reboots that finished),
    # then every this many seconds for a short while. 0: the plain poll only.
    reboot_poll_interval: float = Field(5.0, ge=0)
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
    images: ImagesSettings = ImagesSettings()
    power: PowerSettings = PowerSettings()

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
        elif item in ("function-after", "tagged-union", "int", "str", "[key]") \
                or str(item).startswith(("function-", "union[", "dict[", "list[")):  # pydantic type tags, not keys ('strategy')
            continue
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts) or "(top level)"


_TYPE_NAMES = {"int_type": "an integer", "int_parsing": "an integer", "string_type": "a string",
               "dict_type": "a mapping", "list_type": "a list", "bool_type": "true or false",
               "bool_parsing": "true or false", "float_type": "a number", "float_parsing": "a number"}


def _problems(exc: ValidationError) -> list[str]:
    """One line per culprit. A key that takes one of several forms (a count or a map of counts)
    fails each form: say what was wrong with the value if any form got that far, else which
    forms it may take, not one 'should be a valid ...' per form."""
    by_key: dict[str, list[dict]] = {}
    for err in exc.errors():
        by_key.setdefault(_loc(err["loc"]), []).append(err)
    out = set()
    for key, errs in by_key.items():
        other = [e for e in errs if e["type"] not in _TYPE_NAMES]
        if not other and any(k.startswith((f"{key}.", f"{key}[")) for k in by_key):
            continue  # the value had the form of a map or list: what is wrong is inside it
        if not other and len(errs) > 1:
            forms = list(dict.fromkeys(_TYPE_NAMES[e["type"]] for e in errs))
            out.add(f"{key}: expected {', '.join(forms[:-1])} or {forms[-1]}" if len(forms) > 1
                    else f"{key}: expected {forms[0]}")
            continue
        for err in other or errs:
            msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
            out.add(f"{key}: {msg}")
    return sorted(out)


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
        text = read_text(path)
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read: {exc.strerror or exc}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(str(path), [f"{where}invalid YAML: {getattr(exc, 'problem', exc)}"]) from None
    return parse_config(data, str(path))
