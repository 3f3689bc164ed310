"""Example output stage, part 1 of 3: which columns a dataset's publisher marks sensitive.

The `sensitive_columns` stage refuses a job whose CSV or TSV outputs have a column the dataset's
DDO names in `metadata.additionalInformation.sensitiveColumns`, e.g.

    "metadata": {"type": "dataset", "name": "Patients", ...,
                 "additionalInformation": {"sensitiveColumns": ["ssn", "name"]}}

A publisher writes that list when publishing (it is public, like the rest of the DDO); the Provider
resolves the DDO, checks it on chain and puts it in the job's workflow. This module is what every
process needs to know about the stage and nothing more, so it is light enough for C2D_EXTENSIONS
(imported by the Provider, and the configure and publish pods): the settings model, registered with
`register_output_stage` so a bad `settings:` in environments.yaml is refused where environments load,
and `declared_columns`, which reads the names out of the workflow's DDOs.

The stage itself (an OutputStage, imported only by the code location) is in sensitive_location.py,
its pod program in sensitive_columns_pod.py; docs/extending.md walks through all three.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from c2d_core.environments import register_output_stage
from c2d_core.workflow import Workflow

STAGE_NAME = "sensitive_columns"
MAX_COLUMNS = 256
MAX_COLUMN_CHARS = 256
ColumnName = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_COLUMN_CHARS)
]


class SensitiveColumnsSettings(BaseModel):
    """`settings:` of the stage's `outputStages` entry; every field has a default."""

    model_config = ConfigDict(extra="forbid")

    metadata_key: str = Field(
        default="sensitiveColumns",
        pattern=r"^[A-Za-z][A-Za-z0-9_]{0,63}$",
        description="the key of metadata.additionalInformation that lists the sensitive columns",
    )
    columns: list[ColumnName] = Field(
        default_factory=list,
        max_length=MAX_COLUMNS,
        description="names this environment refuses in every dataset's outputs, besides the DDO's",
    )
    case_sensitive: bool = Field(default=False, description="'SSN' and 'ssn' are the same column unless true")


def parse_settings(raw: Mapping[str, Any]) -> SensitiveColumnsSettings:
    """The settings from the environment's mapping; pydantic's ValidationError names the field."""
    return SensitiveColumnsSettings.model_validate(dict(raw))


class DeclaredColumnsError(ValueError):
    """A DDO's list of sensitive columns is malformed: the stage cannot tell what to refuse."""


def declared_columns(workflow: Workflow, settings: SensitiveColumnsSettings) -> list[str]:
    """The column names to refuse: the settings' own, then each input DDO's list, without repeats.

    Only names leave the DDO: the stage's pod never sees the DDO's services or encrypted files. A
    DDO without `additionalInformation` or without the key marks nothing; one whose value is not a
    list of short non-empty strings raises DeclaredColumnsError (the stage then refuses the outputs,
    since it cannot know what the publisher meant to protect).
    """
    names: list[str] = [str(name) for name in settings.columns]
    for item in workflow.inputs:
        metadata = (item.ddo or {}).get("metadata")
        info = metadata.get("additionalInformation") if isinstance(metadata, dict) else None
        if not isinstance(info, dict) or settings.metadata_key not in info:
            continue
        value = info[settings.metadata_key]
        where = f"the metadata.additionalInformation.{settings.metadata_key} of dataset {item.did}"
        if not isinstance(value, list) or len(value) > MAX_COLUMNS:
            raise DeclaredColumnsError(f"{where} is not a list of at most {MAX_COLUMNS} column names")
        for name in value:
            if not isinstance(name, str) or not name.strip() or len(name) > MAX_COLUMN_CHARS:
                raise DeclaredColumnsError(
                    f"{where} must hold column names (non-empty strings of at most {MAX_COLUMN_CHARS} "
                    "characters)"
                )
            names.append(name.strip())
    unique: list[str] = []
    for name in names:
        if name not in unique:
            unique.append(name)
    return unique


register_output_stage(STAGE_NAME, parse_settings)
