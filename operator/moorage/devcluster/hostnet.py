"""The real node's host networking: its bridge, routes, sysctls and the iptables chains others leave.

Pods live on a bridge of their own (``moorage0``, 10.245.0.0/24); its gateway
address is the *host address*, on which the API server, the kubelet, CoreDNS
and the local hub listen, so pods reach them without anything listening on
the machine's real interfaces. Pods reach nothing beyond this machine: the
host forwards only between pods (their packets are never masqueraded or
forwarded out), and addresses that only exist in the API (the kwok nodes and
their pods, Service IPs nobody serves) are routed nowhere.

Everything here is undone by :func:`teardown`, which is also safe to run on a
host where nothing was set up, or where a crashed run left half of it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import shlex
import subprocess
from pathlib import Path

BRIDGE = "moorage0"
NODE_POD_CIDR = "10.245.0.0/24"
HOST_ADDRESS = "10.245.0.1"
SERVICE_CIDR = "10.96.0.0/16"
DNS_SERVICE_IP = "10.96.0.10"
#: Addresses the API shows but no host has: kwok's pod range and node IPs.
UNREACHABLE_CIDRS = ("10.244.0.0/16", "10.1.0.0/24")
#: Prefixes of the iptables chains kube-proxy, the kubelet and the CNI plugins create.
CHAIN_PREFIXES = ("KUBE-", "CNI-", "MOORAGE-NODE-")
#: Our own chain in the filter table's FORWARD: see :func:`_confine_forwarding`.
FORWARD_CHAIN = "MOORAGE-NODE-FORWARD"
CNI_NETWORK = "moorage"

#: Sysctls the node sets or lets the kubelet and kube-proxy set; restored on teardown.
SYSCTLS = (
    "net/ipv4/ip_forward",
    "net/bridge/bridge-nf-call-iptables",
    "net/bridge/bridge-nf-call-ip6tables",
    "net/ipv4/conf/all/route_localnet",
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)
_SYSCTL_SETTINGS = {
    # Pods reach each other through Service IPs: DNAT, then routed back out of the bridge.
    "net/ipv4/ip_forward": "1",
    # Bridged pod-to-pod replies must pass conntrack to be un-DNATed.
    "net/bridge/bridge-nf-call-iptables": "1",
}
_TABLES = ("filter", "nat", "mangle", "raw")


class HostNetError(RuntimeError):
    """A host networking command failed."""


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(argv), capture_output=True, text=True, timeout=60, check=False)
    if check and result.returncode != 0:
        raise HostNetError(f"{' '.join(argv)}: exit {result.returncode}: {result.stderr.strip()}")
    return result


def _sysctl_path(name: str) -> Path:
    return Path("/proc/sys") / name


def read_sysctls() -> dict[str, str]:
    """The current value of each of :data:`SYSCTLS` that exists on this kernel."""
    values = {}
    for name in SYSCTLS:
        with contextlib.suppress(OSError):
            values[name] = _sysctl_path(name).read_text().strip()
    return values


def write_sysctls(values: dict[str, str]) -> None:
    for name, value in values.items():
        with contextlib.suppress(OSError):
            _sysctl_path(name).write_text(value + "\n")


def setup(saved_sysctls: Path) -> None:
    """Create the bridge and routes and set the sysctls, saving their old values first.

    The old values go to ``saved_sysctls`` (unless a crashed run already saved
    them there: then those are the host's true values).
    """
    if not saved_sysctls.exists():
        saved_sysctls.write_text(json.dumps(read_sysctls(), indent=1))
    forwarding_was_on = json.loads(saved_sysctls.read_text()).get("net/ipv4/ip_forward") == "1"
    _confine_forwarding(others_too=not forwarding_was_on)
    write_sysctls(_SYSCTL_SETTINGS)
    gateway = f"{HOST_ADDRESS}/{ipaddress.ip_network(NODE_POD_CIDR).prefixlen}"
    if _run("ip", "link", "show", BRIDGE, check=False).returncode != 0:
        _run("ip", "link", "add", BRIDGE, "type", "bridge")
    if gateway not in _run("ip", "-o", "addr", "show", "dev", BRIDGE).stdout:
        _run("ip", "addr", "add", gateway, "dev", BRIDGE)
    _run("ip", "link", "set", BRIDGE, "up")
    # Service IPs go to the bridge before kube-proxy's DNAT: a host process can
    # connect to a ClusterIP, and an unserved one goes nowhere.
    _run("ip", "route", "replace", SERVICE_CIDR, "dev", BRIDGE)
    for cidr in UNREACHABLE_CIDRS:
        _run("ip", "route", "replace", "unreachable", cidr)


def _confine_forwarding(*, others_too: bool) -> None:
    """Let the host forward only between pods, never to or from another interface.

    Pods have no business off this machine, so nothing of theirs is forwarded
    out (or in). ``others_too``: forwarding was off before the node turned it
    on, so keep it off for every other interface too (say, a network
    namespace of someone else's test), as it was.
    """
    chain = ("iptables", "-w", "-t", "filter")
    if _run(*chain, "-L", FORWARD_CHAIN, "-n", check=False).returncode == 0:
        _run(*chain, "-F", FORWARD_CHAIN)
    else:
        _run(*chain, "-N", FORWARD_CHAIN)
    _run(*chain, "-A", FORWARD_CHAIN, "-i", BRIDGE, "-o", BRIDGE, "-j", "RETURN")
    _run(*chain, "-A", FORWARD_CHAIN, "-i", BRIDGE, "-j", "REJECT")
    _run(*chain, "-A", FORWARD_CHAIN, "-o", BRIDGE, "-j", "REJECT")
    if others_too:
        _run(*chain, "-A", FORWARD_CHAIN, "-j", "REJECT")
    if _run(*chain, "-C", "FORWARD", "-j", FORWARD_CHAIN, check=False).returncode != 0:
        _run(*chain, "-I", "FORWARD", "1", "-j", FORWARD_CHAIN)


def cni_config(ipam_dir: Path) -> dict[str, object]:
    """The CNI network list for containerd: the bridge, host-local addresses kept in ``ipam_dir``."""
    return {
        "cniVersion": "1.0.0",
        "name": CNI_NETWORK,
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                # No masquerading: pods have no business off this machine.
                "ipMasq": False,
                # A pod reaching itself through a Service IP.
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": NODE_POD_CIDR, "gateway": HOST_ADDRESS}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(ipam_dir),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def owned_chains() -> dict[tuple[str, str], list[str]]:
    """(iptables binary, table) -> chains named with :data:`CHAIN_PREFIXES`."""
    chains: dict[tuple[str, str], list[str]] = {}
    for binary in ("iptables", "ip6tables"):
        for table in _TABLES:
            result = _run(binary, "-w", "-t", table, "-S", check=False)
            if result.returncode != 0:
                continue
            names = [
                line.split()[1]
                for line in result.stdout.splitlines()
                if line.startswith("-N ") and line.split()[1].startswith(CHAIN_PREFIXES)
            ]
            if names:
                chains[(binary, table)] = names
    return chains


def foreign_jump(rule: str) -> list[str] | None:
    """For an ``iptables -S`` line in a chain not ours that jumps into ours: the rule, to ``-D`` it."""
    parts = shlex.split(rule)  # -S quotes comments the way a shell does
    if len(parts) < 3 or parts[0] != "-A" or parts[1].startswith(CHAIN_PREFIXES):
        return None
    return parts[1:] if any(p.startswith(CHAIN_PREFIXES) for p in parts[2:]) else None


def _remove_chains(binary: str, table: str) -> None:
    rules = _run(binary, "-w", "-t", table, "-S", check=False).stdout.splitlines()
    # First the jumps into our chains from the others (PREROUTING, FORWARD...).
    for rule in rules:
        jump = foreign_jump(rule)
        if jump is not None:
            _run(binary, "-w", "-t", table, "-D", *jump, check=False)
    ours = [r.split()[1] for r in rules if r.startswith("-N ") and r.split()[1].startswith(CHAIN_PREFIXES)]
    for chain in ours:
        _run(binary, "-w", "-t", table, "-F", chain, check=False)
    for chain in ours:
        _run(binary, "-w", "-t", table, "-X", chain, check=False)


def teardown(saved_sysctls: Path) -> None:
    """Remove the bridge, routes and owned iptables chains; restore the saved sysctls."""
    for binary in ("iptables", "ip6tables"):
        for table in _TABLES:
            _remove_chains(binary, table)
    for cidr in UNREACHABLE_CIDRS:
        _run("ip", "route", "del", "unreachable", cidr, check=False)
    _run("ip", "link", "del", BRIDGE, check=False)
    # The veths of pods whose namespaces are gone went with them; any still
    # attached to the bridge were removed with it.
    if saved_sysctls.exists():
        with contextlib.suppress(ValueError, OSError):
            write_sysctls(json.loads(saved_sysctls.read_text()))
        saved_sysctls.unlink()


def leftovers() -> list[str]:
    """What :func:`teardown` should have removed and is still there (empty when clean)."""
    found = []
    if _run("ip", "link", "show", BRIDGE, check=False).returncode == 0:
        found.append(f"link {BRIDGE}")
    routes = _run("ip", "route", "show", check=False).stdout
    for cidr in (SERVICE_CIDR, *UNREACHABLE_CIDRS):
        if cidr in routes:
            found.append(f"route {cidr}")
    for (binary, table), chains in owned_chains().items():
        found.append(f"{binary} -t {table}: {', '.join(chains)}")
    veths = _run("ip", "-o", "link", "show", "type", "veth", check=False).stdout
    if f"master {BRIDGE}" in veths:
        found.append("veths on the bridge")
    return found
