"""SimGrid platforms: one multi-core machine (the check against real runs), or GPU nodes on a
two-level fat tree (the predictions). One SimGrid host per node; a core does 1e9 flop/s, so a lane
executes `seconds * FLOPS` flops."""
from __future__ import annotations

from .scenario import Scenario

FLOPS = 1e9
MAX_NODES_PER_SWITCH = 32


def engine(sg):
    """SimGrid's engine with a plain bandwidth-sharing network model (no TCP fudge factors: our
    links are calibrated MPI figures) and quiet logs."""
    return sg.Engine(["scaling_model", "--cfg=network/model:CM02", "--log=root.thres:critical",
                      "--cfg=contexts/factory:thread"])


def one_machine(sg, scenario: Scenario) -> dict[int, object]:
    """Every rank on one host of `cores_per_node` cores; ranks talk through a loopback link with the
    measured MPI bandwidth and latency."""
    zone = sg.NetZone.create_full_zone("machine")
    host = zone.create_host("node0", FLOPS)
    host.core_count = scenario.cores_per_node
    host.seal()
    net = scenario.network
    link = zone.create_link("loopback", net.loopback_Bps)
    link.set_latency(net.loopback_latency_s)
    link.seal()
    zone.add_route(host.netpoint, host.netpoint, None, None, [sg.LinkInRoute(link)], True)
    zone.seal()
    return {0: host}


def fat_tree(sg, scenario: Scenario) -> dict[int, object]:
    """Nodes of `cores_per_node` cores under leaf switches of up to 32 nodes, every leaf switch linked
    to each of as many spine switches as it has nodes (full bisection bandwidth)."""
    nodes, net = scenario.placement.nodes, scenario.network
    per_switch = min(MAX_NODES_PER_SWITCH, nodes)
    if nodes % per_switch:
        raise ValueError(f"{nodes} nodes do not fill switches of {per_switch}")
    hosts: dict[int, object] = {}

    def node(zone, coord, ident):
        host = zone.create_host(f"node{ident}", FLOPS)
        host.core_count = scenario.cores_per_node
        hosts[ident] = host.seal()
        return host.netpoint, None

    def loopback(zone, coord, ident):
        link = zone.create_link(f"loopback{ident}", net.loopback_Bps)
        link.set_latency(net.loopback_latency_s)
        return link.seal()

    params = sg.FatTreeParams(2, [per_switch, nodes // per_switch], [1, per_switch], [1, 1])
    zone = sg.NetZone.create_fatTree_zone("fat_tree", None, params, sg.ClusterCallbacks(node, loopback, None),
                                          net.bandwidth_Bps, net.latency_s, sg.Link.SharingPolicy.SPLITDUPLEX)
    zone.seal()
    return hosts
