"""`zerotune cluster status|scale|wait|render`: the KubeRay RayCluster of k8s/.

Thin handlers over `cluster.kube` (kubernetes client) and `cluster.sizing` (pure sizing).
"""

from __future__ import annotations

import json


def _kube_options(p) -> None:
    p.add_argument("--name", default="zerotune", help="RayCluster name (default: zerotune)")
    p.add_argument("--namespace", "-n", default="zerotune", help="its namespace (default: zerotune)")
    p.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
    p.add_argument("--context", help="kubeconfig context (default: the current one)")
    p.add_argument("--format", choices=["table", "json"], default="table")


def add_parser(subparsers) -> None:
    group = subparsers.add_parser("cluster", help="the KubeRay cluster: status, scale, wait, render")
    sub = group.add_subparsers(dest="cluster_command", metavar="SUBCOMMAND", required=True)

    p = sub.add_parser("status", help="head and workers ready, GPUs, Ray version, dashboard address")
    _kube_options(p)
    p.set_defaults(func=_status)

    p = sub.add_parser("scale", help="set a worker group's replicas (within its min/max)")
    p.add_argument("--workers", type=int, required=True, help="worker pods wanted")
    p.add_argument("--group", help="worker group (default: the only one)")
    _kube_options(p)
    p.set_defaults(func=_scale)

    p = sub.add_parser("wait", help="block until the head and the desired workers are ready")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds (default: 600)")
    p.add_argument("--workers", type=int, help="ready workers to wait for (default: the desired count)")
    _kube_options(p)
    p.set_defaults(func=_wait)

    p = sub.add_parser(
        "render",
        help="a kustomize patch sizing the worker group for a sweep config",
        description="Workers = max concurrent trials (default 1) x Ray Train workers per trial; "
        "one GPU per worker when scaling.use_gpu. Prints a JSON patch for an overlay.",
    )
    p.add_argument("config", help="sweep YAML file")
    p.add_argument("overrides", nargs="*", help="key=value overrides")
    p.add_argument("--cluster-name", default="zerotune", help="RayCluster the patch targets")
    p.add_argument("--memory-per-cpu", type=int, default=4, help="GiB of memory per worker CPU (default: 4)")
    p.add_argument("--format", choices=["yaml", "json", "table"], default="yaml")
    p.set_defaults(func=_render)


def _api(args):
    from cluster.kube import connect

    return connect(kubeconfig=args.kubeconfig, context=args.context)


def _status(args) -> int:
    from cluster.kube import cluster_status

    status = cluster_status(api=_api(args), name=args.name, namespace=args.namespace)
    print(json.dumps(status, indent=2) if args.format == "json" else _status_table(status))
    return 0


def _status_table(s: dict) -> str:
    head = "ready" if s["head_ready"] else "NOT READY"
    lines = [
        f"cluster     {s['namespace']}/{s['name']} ({s['state']}, Ray {s['ray_version']}, "
        f"autoscaling {'on' if s['autoscaling'] else 'off'})",
        f"head        {head} ({s['head_pod'] or 'no pod'})",
        f"workers     {s['workers_ready']}/{s['workers_desired']} ready, {s['gpus_ready']} GPU(s)",
    ]
    for g in s["groups"]:
        lines.append(f"  {g['group']:<10}{g['ready']}/{g['desired']} ready (min {g['min']}, max {g['max']})")
    lines += [f"dashboard   {s['dashboard']}", f"  locally:  {s['port_forward']}"]
    return "\n".join(lines)


def _scale(args) -> int:
    from cluster.kube import scale_workers

    result = scale_workers(
        api=_api(args), workers=args.workers, name=args.name, namespace=args.namespace, group=args.group
    )
    if args.format == "json":
        print(json.dumps(result))
    else:
        print(
            f"{result['namespace']}/{result['name']} group {result['group']}: "
            f"replicas {result['from']} -> {result['to']}"
            f" (allowed {result['min']}..{result['max']})"
        )
        if "note" in result:
            print(f"note: {result['note']}")
    return 0


def _wait(args) -> int:
    from cluster.kube import wait_ready

    status = wait_ready(
        api=_api(args), name=args.name, namespace=args.namespace, timeout_s=args.timeout, workers=args.workers
    )
    print(json.dumps(status, indent=2) if args.format == "json" else _status_table(status))
    return 0


def _render(args) -> int:
    from cluster.sizing import raycluster_patch, render_patch_yaml, worker_plan
    from sweeps.config import load_config

    cfg = load_config(args.config, args.overrides)
    plan = worker_plan(
        name=cfg.name,
        num_workers=cfg.scaling.num_workers,
        use_gpu=cfg.scaling.use_gpu,
        cpus_per_worker=cfg.scaling.cpus_per_worker,
        max_concurrent_trials=cfg.search.max_concurrent_trials,
        memory_gi_per_cpu=args.memory_per_cpu,
    )
    if args.format == "json":
        print(json.dumps({"plan": plan, "patch": raycluster_patch(plan=plan)}, indent=2))
    elif args.format == "table":
        for key, value in plan.items():
            print(f"{key:<20}{value}")
    else:
        print(render_patch_yaml(plan=plan, cluster_name=args.cluster_name), end="")
    return 0
