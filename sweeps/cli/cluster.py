"""`zerotune cluster status|scale|wait|render`: the KubeRay RayCluster of k8s/.

Thin handlers over `cluster.kube` (kubernetes client), `cluster.scale` (worker-group patches),
`cluster.probe` (Ray's own view through the dashboard) and `cluster.sizing` (pure sizing).
"""

from __future__ import annotations

import json


def _kube_options(p) -> None:
    from cluster.kube import DEFAULT_NAME, DEFAULT_NAMESPACE

    p.add_argument("--name", default=DEFAULT_NAME, help=f"RayCluster name (default: {DEFAULT_NAME})")
    p.add_argument("--namespace", "-n", default=DEFAULT_NAMESPACE, help=f"its namespace (default: {DEFAULT_NAMESPACE})")
    p.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
    p.add_argument("--context", help="kubeconfig context (default: the current one)")
    p.add_argument("--format", choices=["table", "json"], default="table")


def _ray_options(p, what: str) -> None:
    from cluster.jobs import PORT_FORWARD

    p.add_argument(
        "--address",
        help=f"the head's dashboard URL (after `{PORT_FORWARD}`: http://127.0.0.1:8265); with it, {what}",
    )
    p.add_argument("--token-file", help="the cluster's auth token (default: $RAY_AUTH_TOKEN, else ~/.ray/auth_token)")


def add_parser(subparsers) -> None:
    from cluster.kube import DEFAULT_NAME

    group = subparsers.add_parser("cluster", help="the KubeRay cluster: status, scale, wait, render")
    sub = group.add_subparsers(dest="cluster_command", metavar="SUBCOMMAND", required=True)

    p = sub.add_parser("status", help="head and workers ready, GPUs, Ray version, dashboard address")
    _kube_options(p)
    p.set_defaults(func=_status)

    p = sub.add_parser(
        "scale",
        help="scale a worker group (minReplicas when the autoscaler is on, else replicas)",
        description="Without autoscaling: set replicas. With it: set minReplicas (the autoscaler owns replicas and "
        "removes idle workers above minReplicas); scaling down names surplus pods without Ray work in "
        "scaleStrategy.workersToDelete and reports the busy ones that stay until idle.",
    )
    p.add_argument("--workers", type=int, required=True, help="worker pods wanted")
    p.add_argument("--group", help="worker group (default: the only one)")
    _ray_options(p, "Ray names the idle workers a scale-down may delete at once")
    _kube_options(p)
    p.set_defaults(func=_scale)

    p = sub.add_parser(
        "wait",
        help="block until the head and workers are ready (and, with --address, the results path is writable)",
    )
    p.add_argument("--timeout", type=float, default=600.0, help="seconds (default: 600)")
    p.add_argument("--workers", type=int, help="exact ready workers to wait for (default: at least the desired count)")
    p.add_argument(
        "--results",
        help="results path or URI to probe (default: the head's $ZEROTUNE_RESULTS, /mnt/results in k8s/base)",
    )
    _ray_options(p, "a tiny Ray job checks that the Ray user can write the results path")
    _kube_options(p)
    p.set_defaults(func=_wait)

    p = sub.add_parser(
        "render",
        help="size the worker group for a sweep config (a kustomize patch, or with --overlay the manifests)",
        description="Workers = max concurrent trials (default 1) x Ray Train workers per trial. With --node-type or "
        "--node-allocatable, GPU pods get an even share of the node's allocatable CPU/memory (less DaemonSets): "
        "one pod per GPU (per-gpu) or one per node (per-node; auto when a trial has more than one worker). "
        "With --overlay, prints the overlay's manifests with that patch, and refuses a placeholder left in them.",
    )
    p.add_argument("config", nargs="?", help="sweep YAML file (optional with --overlay)")
    p.add_argument("overrides", nargs="*", help="key=value overrides")
    p.add_argument("--overlay", help="kustomize folder to render, e.g. k8s/overlays/gpu (needs kubectl)")
    p.add_argument("--node-type", help="GPU instance type, e.g. p4d.24xlarge, a3-highgpu-8g, Standard_ND96asr_v4")
    p.add_argument(
        "--node-allocatable",
        help="the node's allocatable, e.g. cpu=95690m,memory=1100Gi,nvidia.com/gpu=8 or the JSON of "
        "`kubectl get node NODE -o jsonpath='{.status.allocatable}'`",
    )
    p.add_argument("--shape", choices=["auto", "per-gpu", "per-node"], default="auto", help="GPU pod shape")
    p.add_argument("--cluster-name", default=DEFAULT_NAME, help=f"RayCluster to patch (default: {DEFAULT_NAME})")
    p.add_argument("--memory-per-cpu", type=int, default=4, help="GiB of memory per worker CPU without a node type")
    p.add_argument("--format", choices=["yaml", "json", "table"], default="yaml")
    p.set_defaults(func=_render)


def _api(args):
    from cluster.kube import connect

    return connect(kubeconfig=args.kubeconfig, context=args.context)


def _token(args):
    from cluster.jobs import resolve_token

    return resolve_token(token_file=args.token_file)


def _status(args) -> int:
    from cluster.kube import cluster_status

    status = cluster_status(api=_api(args), name=args.name, namespace=args.namespace)
    print(json.dumps(status, indent=2) if args.format == "json" else _status_table(status))
    return 0


def _status_table(s: dict) -> str:
    head = "ready" if s["head_ready"] else "NOT READY"
    scaler = (
        f"autoscaling on, idle workers leave after {s['idle_timeout_s']} s" if s["autoscaling"] else "autoscaling off"
    )
    lines = [
        f"cluster     {s['namespace']}/{s['name']} ({s['state']}, Ray {s['ray_version']}, {scaler})",
        f"head        {head} ({s['head_pod'] or 'no pod'})",
        f"workers     {s['workers_ready']}/{s['workers_desired']} ready, {s['gpus_ready']} GPU(s)",
    ]
    for g in s["groups"]:
        leaving = f", leaving: {', '.join(g['leaving'])}" if g["leaving"] else ""
        lines.append(f"  {g['group']:<10}{g['ready']}/{g['desired']} ready (min {g['min']}, max {g['max']}{leaving})")
    lines += [f"dashboard   {s['dashboard']}", f"  locally:  {s['port_forward']}"]
    if "storage" in s:
        lines.append(f"storage     {s['storage']}")
    return "\n".join(lines)


def _scale(args) -> int:
    from cluster.scale import scale_workers

    idle = None
    if args.address:
        from functools import partial

        from cluster.probe import idle_worker_pods

        idle = partial(idle_worker_pods, address=args.address, token=_token(args))
    result = scale_workers(
        api=_api(args), workers=args.workers, name=args.name, namespace=args.namespace, group=args.group, idle=idle
    )
    if args.format == "json":
        print(json.dumps(result))
        return 0
    field = "minReplicas" if result["autoscaling"] else "replicas"
    print(
        f"{result['namespace']}/{result['name']} group {result['group']}: {field} {result['from']} -> {result['to']}"
        f" (max {result['max']})"
    )
    if "note" in result:
        print(f"note: {result['note']}")
    return 0


def _wait(args) -> int:
    from cluster.kube import wait_ready

    status = wait_ready(
        api=_api(args), name=args.name, namespace=args.namespace, timeout_s=args.timeout, workers=args.workers
    )
    if args.address:
        from cluster.probe import check_results_writable

        probe = check_results_writable(address=args.address, token=_token(args), path=args.results)
        status["storage"] = f"{probe['path']} writable by uid {probe['uid']} gid {probe['gid']} (job {probe['job_id']})"
    else:
        status["storage"] = "NOT CHECKED: pass --address (after port-forward) to probe the results path"
    print(json.dumps(status, indent=2) if args.format == "json" else _status_table(status))
    return 0


def _render(args) -> int:
    from cluster.sizing import node_allocatable, raycluster_patch, render_overlay, render_patch_yaml, worker_plan
    from zerotune.errors import ConfigError

    if args.config is None and not args.overlay:
        raise ConfigError([("config", "a sweep config is needed without --overlay", "pass CONFIG, --overlay, or both")])
    plan = None
    if args.config is not None:
        from sweeps.config import load_config

        cfg = load_config(args.config, args.overrides)
        plan = worker_plan(
            name=cfg.name,
            num_workers=cfg.scaling.num_workers,
            use_gpu=cfg.scaling.use_gpu,
            cpus_per_worker=cfg.scaling.cpus_per_worker,
            max_concurrent_trials=cfg.search.max_concurrent_trials,
            memory_gi_per_cpu=args.memory_per_cpu,
            node=node_allocatable(node_type=args.node_type, allocatable=args.node_allocatable),
            shape=args.shape,
        )
    if args.overlay:
        patch = raycluster_patch(plan=plan) if plan else None
        print(render_overlay(args.overlay, patch=patch, cluster_name=args.cluster_name), end="")
    elif args.format == "json":
        print(json.dumps({"plan": plan, "patch": raycluster_patch(plan=plan)}, indent=2))
    elif args.format == "table":
        for key, value in plan.items():
            print(f"{key:<20}{value}")
    else:
        print(render_patch_yaml(plan=plan, cluster_name=args.cluster_name), end="")
    return 0
