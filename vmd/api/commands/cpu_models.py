"""CPU models over QMP (QEMU's qapi/machine-target.json): query-cpu-definitions,
query-cpu-model-expansion, query-cpu-model-comparison and query-cpu-model-baseline.

The answers are QEMU 7.2's for s390x under TCG (vmd.cpu.models).  Results are
built with their members in the order QEMU inserts them, which the QMP encoder
turns into QEMU's QDict order; the properties of a model in a request are
applied in QDict order too, as QEMU applies them (the order matters when a
group and one of its features are both given).  The one order vmd does not
reproduce is query-cpu-definitions': QEMU walks a hash table of all its types;
vmd lists the models as ``-cpu help`` does.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from vmd.api.models import Out
from vmd.api.registry import Args, Context, Registry
from vmd.cpu import models
from vmd.errors import GenericError
from vmd.proto.qmp import qdict_order


# -- argument and result shapes (QAPI) -------------------------------------------------------
class CpuModelInfo(Args):
    name: str
    props: Any = Field(None, description="properties to set on the model: feature or group name -> bool")


class ExpansionArgs(Args):
    type: Literal["static", "full"]
    model: CpuModelInfo


def _expansion_schema() -> dict:
    """The arguments' schema with the type of ``type`` checked before its value: jsonschema
    reports in schema order, and QEMU names a wrong type before a wrong value."""
    schema = ExpansionArgs.model_json_schema(by_alias=True)
    member = schema["properties"]["type"]
    schema["properties"]["type"] = dict(sorted(member.items(), key=lambda item: item[0] != "type"))
    return schema


class TwoModelsArgs(Args):
    modela: CpuModelInfo
    modelb: CpuModelInfo


class CpuModelInfoOut(Out):
    name: str
    props: dict[str, bool] | None = None


class CpuDefinitionInfo(Out):
    name: str
    migration_safe: bool | None = Field(None, alias="migration-safe")
    static: bool
    unavailable_features: list[str] | None = Field(None, alias="unavailable-features")
    typename: str
    deprecated: bool


class CpuModelExpansionInfo(Out):
    model: CpuModelInfoOut


class CpuModelCompareInfo(Out):
    result: Literal["incompatible", "identical", "superset", "subset"]
    responsible_properties: list[str] = Field(alias="responsible-properties")


class CpuModelBaselineInfo(Out):
    model: CpuModelInfoOut


# -- conversions ---------------------------------------------------------------------------
def model_from_info(info: CpuModelInfo) -> models.CpuModel:
    """A CpuModelInfo as a CPU model: the named class with the properties applied (QEMU's
    cpu_model_from_info: the props must be an object, the name known, then each property in
    QDict order).

    :raises VmdError: with QEMU's text.
    """
    given = "props" in info.model_fields_set
    if given and not isinstance(info.props, dict):
        raise GenericError("Invalid parameter type for 'props', expected: dict")
    model = models.CpuModel.named(info.name)
    if model is None:
        raise GenericError(f"The CPU definition '{info.name}' is unknown.")
    if given:
        for name, value in qdict_order(info.props).items():
            model.set_property(name, value)
    return model


def model_info(model: models.CpuModel, full: bool) -> dict:
    name, props = models.expansion(model, full)
    return {"name": name, "props": dict(props)} if props else {"name": name}


def definition_list() -> list[dict]:
    out = []
    for model_class in models.MODEL_CLASSES.values():
        out.append({
            "name": model_class.name,
            "migration-safe": model_class.migration_safe,
            "static": model_class.static,
            "unavailable-features": models.unavailable_features(model_class),
            "typename": model_class.typename,
            "deprecated": False,
        })
    return out


def register(r: Registry) -> None:
    @r.command("query-cpu-definitions", returns=list[CpuDefinitionInfo])
    def query_cpu_definitions(ctx: Context, args: None) -> list[dict]:
        """Every CPU model, and what keeps the accelerator from running it."""
        return definition_list()

    @r.command("query-cpu-model-expansion", args=ExpansionArgs, returns=CpuModelExpansionInfo,
               args_schema=_expansion_schema)
    def query_cpu_model_expansion(ctx: Context, args: ExpansionArgs) -> dict:
        """A CPU model as a static base model plus changes (static), or with every feature (full)."""
        model = model_from_info(args.model)
        return {"model": model_info(model, full=args.type == "full")}

    @r.command("query-cpu-model-comparison", args=TwoModelsArgs, returns=CpuModelCompareInfo)
    def query_cpu_model_comparison(ctx: Context, args: TwoModelsArgs) -> dict:
        """How model A relates to model B, and the properties that make the difference."""
        result, responsible = models.comparison(model_from_info(args.modela), model_from_info(args.modelb))
        return {"result": result, "responsible-properties": responsible}

    @r.command("query-cpu-model-baseline", args=TwoModelsArgs, returns=CpuModelBaselineInfo)
    def query_cpu_model_baseline(ctx: Context, args: TwoModelsArgs) -> dict:
        """The newest static model that both models can run."""
        model = models.baseline(model_from_info(args.modela), model_from_info(args.modelb))
        return {"model": model_info(model, full=False)}
