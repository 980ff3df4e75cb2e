"""`zerotune report|refit|predict`: what a finished sweep leaves behind, read from its storage."""

from __future__ import annotations

import json
import sys


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "report",
        help="a sweep's report (html, md or json), built from its storage only",
        description="Best trial (config, per-fold metrics, DeepSpeed config), every trial's state and cost, and plots. "
        "Reads only the sweep's storage: works after the cluster is gone. With --address and --job-id, finds the sweep "
        "a submitted job runs.",
    )
    p.add_argument("sweep", nargs="?", help="sweep directory or URI, or a name under --storage")
    p.add_argument(
        "--storage",
        help="storage path/URI the name is under (default ./results; with --job-id: the job's storage.path)",
    )
    p.add_argument("--format", choices=["html", "md", "json"], default="html", help="json is also printed to stdout")
    p.add_argument("--out", help="output directory (default: <sweep>/report)")
    p.add_argument(
        "--address", help="Ray dashboard URL of the cluster the job was submitted to, e.g. http://127.0.0.1:8265"
    )
    p.add_argument("--job-id", help="the submitted job's id (with --address)")
    p.add_argument(
        "--token-file", help="file holding the cluster's auth token (default: $RAY_AUTH_TOKEN, else ~/.ray/auth_token)"
    )
    p.set_defaults(func=_report)

    p = subparsers.add_parser(
        "refit",
        help="train the best config on all non-test rows, score it on the test split, export it",
        description="Needs a sweep run with folds.test_fraction > 0. Each refit is a fresh run directory "
        "<sweep>/refit/<stamp>/ with its metrics.json and model/ (safetensors, tokenizer, labels, model card); "
        "<sweep>/refit/latest.json names the newest that completed (what `zerotune report` and `zerotune predict "
        "<sweep>` read).",
    )
    p.add_argument("sweep", help="sweep directory or URI, or a name under --storage")
    p.add_argument("--storage", default="./results", help="storage path the name is under")
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else embedded local Ray)")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.set_defaults(func=_refit)

    p = subparsers.add_parser(
        "predict",
        help="run an exported model on new rows (CSV/TSV/JSONL/Parquet in, predictions out)",
        description="Plain transformers, batched; prints the throughput. Each row gets the preprocessing the model "
        "was trained with, as its export recorded it (normalisation, text pairs, max_length, a causal LM's prompt "
        "format and chat template). Classification: label and one probability per class; regression: the value; "
        "causal LM: the generated continuation.",
    )
    p.add_argument(
        "model_dir",
        metavar="MODEL_DIR",
        help="an exported model directory (a refit's or a `zerotune train` run's model/), or a sweep directory: "
        "its latest completed refit's model",
    )
    p.add_argument("--input", required=True, help="CSV, TSV, JSONL or Parquet file")
    p.add_argument(
        "--text-column", help="column holding the text (default: the one the model was trained on, else text)"
    )
    p.add_argument("--text-pair-column", help="column holding the second text, for a model trained on sentence pairs")
    p.add_argument("--output", help="write predictions here (.csv, .tsv, .jsonl, .parquet); default: print them")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], default="cpu", help="auto: cuda where there is a GPU")
    gen = p.add_argument_group("causal LM generation")
    gen.add_argument("--max-new-tokens", type=int, default=64, help="tokens generated per row at most (default 64)")
    gen.add_argument("--do-sample", action="store_true", help="sample instead of greedy decoding")
    gen.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (with --do-sample)")
    gen.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (with --do-sample)")
    gen.add_argument("--seed", type=int, help="seed for sampling (repeatable output)")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.set_defaults(func=_predict)


def _report(args) -> int:
    from sweeps.report.facts import build_report
    from sweeps.results.status import locate_sweep
    from zerotune.errors import ConfigError

    if args.job_id or args.address:
        if not (args.job_id and args.address) or args.sweep:
            raise ConfigError(
                [
                    (
                        "--job-id",
                        "a job's report needs --address and --job-id, and no sweep argument",
                        "zerotune report --address http://HEAD:8265 --job-id ID",
                    )
                ]
            )
        from cluster.jobs import resolve_token
        from sweeps.results.job import job_sweep_uri

        uri = job_sweep_uri(
            address=args.address,
            job_id=args.job_id,
            token=resolve_token(token_file=args.token_file),
            storage=args.storage,
        )
    elif args.sweep:
        uri = locate_sweep(args.sweep, storage=args.storage or "./results")
    else:
        raise ConfigError([("sweep", "which sweep?", "pass NAME|PATH|URI, or --address and --job-id")])
    from sweeps.cli import data_stdout

    with data_stdout(args.format):
        result = build_report(uri, formats=(args.format,), out_dir=args.out)
    if args.format == "json":
        print(json.dumps(result["facts"], indent=2))
    else:
        print(f"report: {result['files'][args.format]}")
        print(f"plots:  {len(result['plots'])} PNG files under {result['out_dir']}")
        for note in result["facts"]["notes"]:
            print(f"note:   {note}")
    return 0


def _refit(args) -> int:
    from sweeps.cli import data_stdout, shows_worker_logs
    from sweeps.final.refit import refit
    from trainer.metrics import scalar_metrics

    with data_stdout(args.format):
        summary = refit(args.sweep, storage=args.storage, address=args.address, worker_logs=shows_worker_logs(args))
    if args.format == "json":
        print(json.dumps(summary, indent=2, default=str))
        return 0
    cv = summary["cv"]
    print(
        f"refit of trial {summary['trial_id']} on {summary['n_train']} rows, "
        f"scored on {summary['n_test']} test rows ({summary['wall_s']} s)"
    )
    print(f"  cross-validation {cv['metric']}: {cv['mean']:.4f} ± {cv['std']:.4f}")
    print("  test: " + ", ".join(f"{k} {v:.4f}" for k, v in scalar_metrics(summary["metrics"]).items()))
    print(f"  model: {summary['model_dir']} (now the sweep's latest refit)")
    return 0


def _predict(args) -> int:
    from sweeps.cli import data_stdout
    from sweeps.final.generation import Sampling
    from sweeps.final.predict import predict

    sampling = Sampling(
        max_new_tokens=args.max_new_tokens,
        do_sample=args.do_sample,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
    )
    with data_stdout(args.format):
        result = predict(
            args.model_dir,
            input_path=args.input,
            text_column=args.text_column,
            text_pair_column=args.text_pair_column,
            output=args.output,
            batch_size=args.batch_size,
            device=args.device,
            sampling=sampling,
        )
    table = result.pop("table")
    line = (
        f"predicted {result['rows']} rows in {result['seconds']:.2f} s: {result['rows_per_s']} rows/s "
        f"(batch {result['batch_size']}, {result['device']}, {result['threads']} CPU threads)"
    )
    if args.format == "json":
        if not args.output:
            result["predictions"] = json.loads(table.to_json(orient="records", force_ascii=False))
        print(json.dumps(result))
        return 0
    if not args.output:
        print(table.to_string(index=False, max_colwidth=60))
    else:
        print(f"predictions: {args.output}")
    print(line, file=sys.stdout)
    return 0
