"""`c2d compute start`: what ocean.py's `start_compute_job` does, with `--wait` following the job.

The steps, each a function: check the flags, resolve the inputs and the environment, quote and pay
the orders and send the signed start (c2d_cli.consumer), then print the job id or follow it to its end.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from c2d_cli.cli_output import (
    EXIT_AWAITING_REVIEW,
    EXIT_JOB_FAILED,
    JsonOption,
    OutputOption,
    explain_provider_error,
    load_config,
    open_provider,
    print_json,
    reported,
    wants_json,
)
from c2d_cli.commands_publish import check_provider_serves
from c2d_cli.compute.context import err, out
from c2d_cli.compute.envs import choose_environment
from c2d_cli.compute.inputs import (
    output_request,
    parse_custom_data,
    parse_input,
    raw_algorithm_meta,
    resolve_targets,
)
from c2d_cli.compute.outcome import awaiting_review, failure_of, report_final
from c2d_cli.compute.progress import follow_job
from c2d_cli.config import (
    AccountOption,
    ChainIdOption,
    CliConfig,
    HomeOption,
    KeyFileOption,
    ProviderUrlOption,
    RpcUrlOption,
)
from c2d_cli.consumer import (
    Say,
    Target,
    check_can_pay,
    check_inputs_reachable,
    check_quotes,
    initialize,
    place_orders,
    start_job,
)

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

    from c2d_cli.provider_client import ProviderClient
    from c2d_core.chain import Chain

DatasetOption = Annotated[
    list[str],
    typer.Option(
        "--dataset", help="A dataset's DID, or DID#SERVICE_ID (repeatable; the first is the main input)."
    ),
]
AlgorithmOption = Annotated[
    str | None, typer.Option("--algorithm", help="A published algorithm's DID (or DID#SERVICE_ID).")
]
RawAlgorithmOption = Annotated[
    Path | None,
    typer.Option("--raw-algorithm", help="Your own code, if every dataset allows raw algorithms."),
]
ImageOption = Annotated[
    str | None, typer.Option("--image", help="With --raw-algorithm: IMAGE:TAG, or IMAGE:TAG@sha256:DIGEST.")
]
ChecksumOption = Annotated[
    str | None, typer.Option("--checksum", help="With --raw-algorithm: the image digest sha256:….")
]
EntrypointOption = Annotated[
    str | None, typer.Option("--entrypoint", help="With --raw-algorithm: the command, e.g. 'python $ALGO'.")
]
EnvOption = Annotated[str | None, typer.Option("--env", help="Compute environment id (default: the first).")]
CustomDataOption = Annotated[
    str | None, typer.Option("--algocustomdata", help="A JSON object handed to the algorithm.")
]
PublishOutputOption = Annotated[
    bool,
    typer.Option(
        "--publish-output",
        help="Publish the results as a new Ocean asset you own (Ocean's output.publishOutput).",
    ),
]
OutputNameOption = Annotated[
    str | None, typer.Option("--output-name", help="With --publish-output: the new asset's name.")
]
OutputDescriptionOption = Annotated[
    str | None, typer.Option("--output-description", help="With --publish-output: its description.")
]
OutputTagOption = Annotated[
    list[str] | None, typer.Option("--output-tag", help="With --publish-output: a tag (repeatable).")
]
OutputLicenseOption = Annotated[
    str | None, typer.Option("--output-license", help="With --publish-output: its license.")
]
OutputOwnerOption = Annotated[
    str | None,
    typer.Option("--output-owner", help="With --publish-output: who owns it (default: your account)."),
]
PublishLogOption = Annotated[
    bool,
    typer.Option("--publish-log", help="With --publish-output: include the algorithm's log in the asset."),
]
WaitOption = Annotated[bool, typer.Option("--wait", help="Follow the job to its end and report its results.")]
TimeoutOption = Annotated[float, typer.Option("--timeout", help="Seconds --wait follows the job.")]


@dataclass(frozen=True)
class StartFlags:
    """The start's flags, checked before anything is read or called."""

    datasets: list[tuple[str, str | None]]
    algorithm: str | None
    raw_algorithm: Path | None
    image: str | None
    checksum: str | None
    entrypoint: str | None
    custom: dict[str, Any] | None
    output: dict[str, Any] | None


@dataclass(frozen=True)
class Inputs:
    """What the job runs on and with: resolved services, or the raw algorithm's `meta`."""

    datasets: list[Target]
    algorithm: Target | None
    meta: dict[str, Any] | None

    def names(self) -> dict[str, str]:
        """How a Provider refusal's resource (`dataset`, `algorithm`, `datasets[1]`) is described."""
        names = {
            "dataset": self.datasets[0].label,
            "algorithm": self.algorithm.label if self.algorithm else "the raw algorithm",
        }
        names.update({f"datasets[{i}]": target.label for i, target in enumerate(self.datasets) if i})
        return names


def check_flags(
    dataset: list[str],
    algorithm: str | None,
    raw_algorithm: Path | None,
    image: str | None,
    checksum: str | None,
    entrypoint: str | None,
    algocustomdata: str | None,
    output_flags: tuple[bool, str | None, str | None, list[str] | None, str | None, str | None, bool],
) -> StartFlags:
    """Every flag mistake a BadParameter, in this order, before the config is even read."""
    datasets = [parse_input(value, "dataset") for value in dataset]
    if (algorithm is None) == (raw_algorithm is None):
        raise typer.BadParameter("give one of --algorithm DID or --raw-algorithm FILE")
    if algorithm is not None and (image or checksum or entrypoint):
        raise typer.BadParameter(
            "--image, --checksum and --entrypoint go with --raw-algorithm; a published "
            "algorithm brings its container"
        )
    custom = parse_custom_data(algocustomdata)
    output = output_request(*output_flags)
    return StartFlags(datasets, algorithm, raw_algorithm, image, checksum, entrypoint, custom, output)


def resolve_inputs(config: CliConfig, chain: Chain, flags: StartFlags, meta: dict[str, Any] | None) -> Inputs:
    datasets = resolve_targets(config, chain, flags.datasets, role="dataset")
    algorithm = (
        resolve_targets(config, chain, [parse_input(flags.algorithm, "algorithm")], role="algorithm")[0]
        if flags.algorithm
        else None
    )
    return Inputs(datasets, algorithm, meta)


def order_and_start(
    provider: ProviderClient,
    chain: Chain,
    consumer: LocalAccount,
    environment: dict[str, Any],
    inputs: Inputs,
    flags: StartFlags,
    say: Say,
) -> dict[str, Any]:
    """Quote, check the consumer can pay, pay each order, start; a refusal explained for the inputs."""
    from c2d_cli.provider_client import ProviderError

    try:
        quoted = initialize(
            provider,
            chain,
            consumer.address,
            environment,
            inputs.datasets,
            inputs.algorithm,
            meta=inputs.meta,
        )
        say("initializeCompute: the Provider accepts the inputs and the algorithm and quoted its fees")
        check_quotes(chain, environment, quoted)
        check_inputs_reachable(provider, inputs.datasets)
        check_can_pay(chain, consumer.address, quoted)
        orders = place_orders(chain, consumer, environment, quoted, say)
        return start_job(
            provider,
            consumer,
            environment,
            inputs.datasets,
            inputs.algorithm,
            orders,
            meta=inputs.meta,
            algocustomdata=flags.custom,
            output=flags.output,
        )
    except ProviderError as error:
        raise explain_provider_error(error, inputs.names()) from None


def print_started(job: dict[str, Any], json_output: bool) -> None:
    if json_output:
        print_json(job)
    else:
        out.print(job["jobId"])
        err.print(f"  follow it: c2d compute status {job['jobId']}  (or start with --wait)")


def follow_to_the_end(
    provider: ProviderClient, consumer: LocalAccount, job: dict[str, Any], timeout: float, json_output: bool
) -> int:
    """Follow the job, then report it; the exit code (3 when it ran and failed)."""
    try:
        final = follow_job(
            provider,
            consumer.address,
            job,
            timeout=timeout,
            console=err if json_output else out,
            live=out.is_terminal and not json_output,
        )
    except KeyboardInterrupt:
        err.print(
            f"\nstopped following; the job keeps running. `c2d compute status {job['jobId']}`, "
            f"or `c2d compute stop {job['jobId']}`"
        )
        raise typer.Exit(130) from None
    if json_output:
        print_json(final)
        if awaiting_review(final):
            return EXIT_AWAITING_REVIEW
        return EXIT_JOB_FAILED if failure_of(final) else 0
    return report_final(provider, consumer, final, out)


def compute_start(
    dataset: DatasetOption,
    algorithm: AlgorithmOption = None,
    raw_algorithm: RawAlgorithmOption = None,
    image: ImageOption = None,
    checksum: ChecksumOption = None,
    entrypoint: EntrypointOption = None,
    env: EnvOption = None,
    algocustomdata: CustomDataOption = None,
    publish_output: PublishOutputOption = False,
    output_name: OutputNameOption = None,
    output_description: OutputDescriptionOption = None,
    output_tag: OutputTagOption = None,
    output_license: OutputLicenseOption = None,
    output_owner: OutputOwnerOption = None,
    publish_log: PublishLogOption = False,
    wait: WaitOption = False,
    timeout: TimeoutOption = 900.0,
    json_output: JsonOption = False,
    output: OutputOption = None,
    provider_url: ProviderUrlOption = None,
    rpc_url: RpcUrlOption = None,
    chain_id: ChainIdOption = None,
    key_file: KeyFileOption = None,
    account: AccountOption = None,
    home: HomeOption = None,
) -> None:
    """Order the datasets and the algorithm, start the job, and with --wait follow it to its results.

    Calls initializeCompute, pays each quoted provider fee with startOrder (or reuseOrder), then sends
    the signed start. Exit code 3 when the job ran and failed.
    """
    json_output = wants_json(json_output, output)
    flags = check_flags(
        dataset,
        algorithm,
        raw_algorithm,
        image,
        checksum,
        entrypoint,
        algocustomdata,
        (
            publish_output,
            output_name,
            output_description,
            output_tag,
            output_license,
            output_owner,
            publish_log,
        ),
    )
    config = load_config(
        err,
        "consumer",
        provider_url=provider_url,
        rpc_url=rpc_url,
        chain_id=chain_id,
        key_file=key_file,
        account=account,
        home=home,
    )
    if raw_algorithm is not None and not (image and entrypoint):
        raise typer.BadParameter("--raw-algorithm needs --image IMAGE:TAG@sha256:DIGEST and --entrypoint")
    say: Say = (lambda _text: None) if json_output else (lambda text: err.print(f"  {escape(text)}"))
    code = 0
    with reported(err, config):
        meta = (
            raw_algorithm_meta(raw_algorithm, image, checksum, entrypoint, config.chain_id)
            if raw_algorithm
            else None
        )
        consumer = config.account()
        chain = config.connect_chain()
        provider = open_provider(config)
        try:
            check_provider_serves(provider, config, chain.chain_id)
            environment = choose_environment(provider.environments(chain.chain_id), env)
            inputs = resolve_inputs(config, chain, flags, meta)
            if not json_output:
                err.print(
                    f"as {consumer.address} ({config.key_description}), environment {environment['id']}:"
                )
            job = order_and_start(provider, chain, consumer, environment, inputs, flags, say)
            say(f"started job {job['jobId']} (status {job['status']} {str(job['statusText']).strip()})")
            if not wait:
                print_started(job, json_output)
                return
            code = follow_to_the_end(provider, consumer, job, timeout, json_output)
        finally:
            provider.close()
    if code:
        raise typer.Exit(code)
