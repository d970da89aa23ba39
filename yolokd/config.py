# yolokd, AGPL-3.0 License
"""Typed distillation configuration: the KD keys, method yaml(s) and their validation.

The KD keys (``cfg/default.yaml``) are split from the ordinary Ultralytics arguments before Ultralytics' own
``get_cfg`` sees them, so every ``yolo train`` argument keeps working and Ultralytics never meets an unknown key.
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import asdict, dataclass, field
from difflib import get_close_matches
from pathlib import Path
from typing import Any, Callable

from ultralytics.utils import YAML, colorstr

from yolokd.schedules import SCHEDULES

PREFIX = colorstr("yolokd: ")  # the one prefix of every yolokd log line


class KDError(ValueError):
    """A user error in distillation input (teacher, method, config): its message names the fix, one line."""


def cfg_dir() -> Path:
    """Return the folder with ``default.yaml`` and ``methods/``: inside the wheel, else the source tree's ``cfg/``."""
    here = Path(__file__).resolve().parent
    for d in (here / "cfg", here.parent / "cfg"):
        if (d / "default.yaml").is_file():
            return d
    raise FileNotFoundError(f"yolokd cfg/ folder not found next to {here}; reinstall yolokd")


KD_DEFAULTS: dict[str, Any] = YAML.load(cfg_dir() / "default.yaml")
TERM_KEYS = ("type", "name", "weight", "balance", "schedule", "params")
TERM_WEIGHT = "term_weights."  # flat form of one term's weight: term_weights.<term name>=w


def available_methods(task: str | None = None) -> list[str]:
    """Names of the built-in methods (``cfg/methods/*.yaml``); with ``task``, those whose every term reads that task.

    Examples:
        >>> "mask" in available_methods(), "mask" in available_methods("detect"), "mask" in available_methods("segment")
        (True, False, True)
    """
    names = sorted(p.stem for p in (cfg_dir() / "methods").glob("*.yaml"))
    if task is None:
        return names
    from yolokd.losses import TERMS

    return [m for m in names if all(task in TERMS[s.type].tasks for s in resolve_method(m))]


def split_kd_args(args: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a dict of arguments into (KD keys, everything else).

    Examples:
        >>> split_kd_args({"term_weights.cwd": 2.0, "lr0": 0.01})
        ({'term_weights': {'cwd': 2.0}}, {'lr0': 0.01})
    """
    kd = {k: v for k, v in args.items() if k in KD_DEFAULTS}
    flat = {k[len(TERM_WEIGHT) :]: v for k, v in args.items() if k.startswith(TERM_WEIGHT)}
    if flat:  # term_weights.<name>=w, the flat form a command line and a tuner's search space use
        kd["term_weights"] = {**(kd.get("term_weights") or {}), **flat}
    return kd, {k: v for k, v in args.items() if k not in KD_DEFAULTS and not k.startswith(TERM_WEIGHT)}


def suggest(key: str, choices) -> str:
    """Return a ' Did you mean ...?' hint for a misspelt key, or ''."""
    m = get_close_matches(str(key), list(choices), n=1)
    return f" Did you mean '{m[0]}'?" if m else ""


@dataclass
class TermSpec:
    """One distillation term as configured: registry type, item name, weight, schedule and hyper-parameters.

    ``balance`` > 0 replaces the fixed ``weight`` by an automatic one (`yolokd.balance`). An old type name (an alias)
    is replaced by its type; the item name is kept.

    Examples:
        >>> TermSpec("mask_kd", "mask_kd").type
        'mask'
    """

    type: str
    name: str
    weight: float = 1.0
    balance: float = 0.0
    schedule: str = "constant"
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Replace an old type name by the registered type."""
        from yolokd.losses import term_type

        self.type = term_type(self.type)


@dataclass
class KDConfig:
    """The whole distillation configuration of a run (what travels in checkpoints and to DDP workers).

    Every field but ``terms`` defaults to its key in cfg/default.yaml (`KD_DEFAULTS`), the one place defaults live.
    """

    teacher: str | None = KD_DEFAULTS["teacher"]
    method: str = KD_DEFAULTS["method"]
    distill_weight: float = KD_DEFAULTS["distill_weight"]
    balance: float | None = KD_DEFAULTS["balance"]
    teacher_val: bool = KD_DEFAULTS["teacher_val"]
    class_map: dict[int, int] | None = KD_DEFAULTS["class_map"]
    term_weights: dict[str, float] | None = KD_DEFAULTS["term_weights"]
    catchup: float = KD_DEFAULTS["catchup"]
    catchup_pace: float = KD_DEFAULTS["catchup_pace"]
    # unlabeled False: none, even where the data yaml has the key
    unlabeled: str | list[str] | bool | None = KD_DEFAULTS["unlabeled"]
    unlabeled_ratio: float = KD_DEFAULTS["unlabeled_ratio"]
    unlabeled_weight: float = KD_DEFAULTS["unlabeled_weight"]
    pseudo_conf: float = KD_DEFAULTS["pseudo_conf"]
    terms: list[TermSpec] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Return a plain, picklable, yaml-able dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> KDConfig:
        """Rebuild from `to_dict` output."""
        d = dict(d)
        d["terms"] = [TermSpec(**t) for t in d.get("terms", [])]
        return cls(**d)


def term_param_defaults(term_cls) -> dict[str, Any]:
    """The keyword arguments of ``term_cls.__init__`` that have a default, with it: what a method yaml may leave out."""
    sig = inspect.signature(term_cls.__init__).parameters
    return {k: p.default for k, p in sig.items() if k != "self" and p.default is not inspect.Parameter.empty}


def _check_param_types(where: str, term_cls, params: dict[str, Any]) -> None:
    """Check ``params`` against the keyword arguments (and their default types) of ``term_cls.__init__``."""
    sig = {k: p for k, p in inspect.signature(term_cls.__init__).parameters.items() if k != "self"}
    for k, v in params.items():
        if k not in sig:
            raise KDError(
                f"{where}: unknown parameter '{k}' for term '{term_cls.type}'.{suggest(k, sig)} Valid: {sorted(sig)}"
            )
        default = sig[k].default
        if default is inspect.Parameter.empty or default is None:
            continue
        ok = isinstance(v, type(default)) and not (isinstance(v, bool) and not isinstance(default, bool))
        if isinstance(default, float) and isinstance(v, int) and not isinstance(v, bool):
            ok = True
        if not ok:
            raise KDError(
                f"{where}: parameter '{k}' of term '{term_cls.type}' must be {type(default).__name__}, got {v!r}"
            )


def parse_terms(data: Any, source: str) -> list[TermSpec]:
    """Validate the ``terms:`` list of a method yaml (``source`` names it in errors) and return typed specs."""
    from yolokd.losses import TERMS, term_type

    if not isinstance(data, dict) or not isinstance(data.get("terms"), list) or not data["terms"]:
        raise KDError(f"{source}: a method yaml needs a non-empty 'terms:' list, e.g. 'terms: [{{type: cwd}}]'")
    extra = set(data) - {"terms"}
    if extra:
        raise KDError(f"{source}: unknown top-level key(s) {sorted(extra)}; only 'terms' is allowed")
    specs = []
    for i, t in enumerate(data["terms"]):
        where = f"{source} term {i}"
        if not isinstance(t, dict) or "type" not in t:
            raise KDError(f"{where}: each term must be a mapping with a 'type' (one of {sorted(TERMS)})")
        for k in t:
            if k not in TERM_KEYS:
                raise KDError(f"{where}: unknown key '{k}'.{suggest(k, TERM_KEYS)} Valid: {list(TERM_KEYS)}")
        typ = t["type"]
        if term_type(typ) not in TERMS:
            raise KDError(f"{where}: unknown term type '{typ}'.{suggest(typ, TERMS)} Available: {sorted(TERMS)}")
        weight, balance = t.get("weight", 1.0), t.get("balance", 0.0)
        for key, v in (("weight", weight), ("balance", balance)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise KDError(f"{where}: '{key}' must be a number >= 0, got {v!r}")
        schedule = t.get("schedule", "constant")
        if schedule not in SCHEDULES:
            raise KDError(
                f"{where}: unknown schedule {schedule!r}.{suggest(schedule, SCHEDULES)} Available: {sorted(SCHEDULES)}"
            )
        params = t.get("params") or {}
        if not isinstance(params, dict):
            raise KDError(f"{where}: 'params' must be a mapping, got {params!r}")
        _check_param_types(where, TERMS[term_type(typ)], params)
        name = t.get("name", typ)  # an old type name keeps its old item name
        if not isinstance(name, str) or not name.isidentifier():
            raise KDError(f"{where}: 'name' must be an identifier-like string, got {name!r}")
        spec = TermSpec(typ, name, float(weight), float(balance), schedule, dict(params))
        specs.append(spec)
    return specs


def resolve_method(method: str) -> list[TermSpec]:
    """Turn ``method=`` into term specs: a built-in name, names joined by '+', or a method yaml path."""
    if not isinstance(method, str) or not method.strip():
        raise KDError(f"method must be a non-empty string such as 'cwd', got {method!r}")
    specs: list[TermSpec] = []
    for part in method.split("+"):
        part = part.strip()
        if part.endswith((".yaml", ".yml")):
            path = Path(part)
            if not path.is_file():
                raise KDError(
                    f"method file '{part}' does not exist; pass a built-in method {available_methods()} "
                    f"or a path to an existing .yaml"
                )
        else:
            path = cfg_dir() / "methods" / f"{part}.yaml"
            if not path.is_file():
                raise KDError(
                    f"unknown method '{part}'.{suggest(part, available_methods())} "
                    f"Available: {available_methods()}, or a path to a method .yaml"
                )
        try:
            data = YAML.load(path)
        except Exception as e:
            raise KDError(f"method file '{path}' is not valid yaml: {e}") from e
        specs += parse_terms(data, str(path if part.endswith((".yaml", ".yml")) else part))
    names = [s.name for s in specs]
    if dupes := sorted({n for n in names if names.count(n) > 1}):
        raise KDError(f"term name(s) {dupes} used twice in method '{method}'; give each a distinct 'name:'")
    return specs


def build_config(kd_args: dict[str, Any]) -> KDConfig:
    """Validate the KD keys (defaults: ``cfg/default.yaml``; a saved ``terms`` list as is) into a `KDConfig`."""
    args = {**KD_DEFAULTS, **{k: v for k, v in kd_args.items() if v is not None or k == "teacher"}}
    unknown = set(args) - set(KD_DEFAULTS) - {"terms"}
    if unknown:
        k = sorted(unknown)[0]
        raise KDError(f"'{k}' is not a yolokd argument.{suggest(k, KD_DEFAULTS)} Valid: {sorted(KD_DEFAULTS)}")
    dw = _number(args["distill_weight"], "distill_weight", 0)
    bal = args["balance"]
    if bal is not None and (isinstance(bal, bool) or not isinstance(bal, (int, float)) or bal < 0):
        raise KDError(f"balance must be a number >= 0 (0 = fixed weights, r > 0 = automatic) or None, got {bal!r}")
    catchup = args["catchup"]
    if isinstance(catchup, bool) or not isinstance(catchup, (int, float)) or not (catchup >= 0 or catchup == -1):
        raise KDError(f"catchup must be a fraction >= 0 of the teacher's mAP, or -1 (never fade), got {catchup!r}")
    pace = _number(args["catchup_pace"], "catchup_pace", 0, 1)
    unlabeled = _unlabeled_keys(args)
    if not isinstance(args["teacher_val"], bool):
        raise KDError(f"teacher_val must be True or False, got {args['teacher_val']!r}")
    teacher = args["teacher"]
    if teacher is not None and not isinstance(teacher, (str, Path)):
        raise KDError(f"teacher must be a path to a .pt checkpoint, got {teacher!r}")
    class_map = _class_map(args.get("class_map"))
    term_weights = _term_weights(args.get("term_weights"))
    terms = args.get("terms")
    if terms:  # a saved configuration (resume): taken as it was validated then
        terms = [t if isinstance(t, TermSpec) else TermSpec(**t) for t in terms]
    else:
        terms = resolve_method(args["method"])
        if bal is not None:  # the run's balance= overrides every term's
            terms = [dataclasses.replace(t, balance=float(bal)) for t in terms]
        terms = _apply_term_weights(terms, term_weights, str(args["method"]))
    return KDConfig(
        teacher=None if teacher is None else str(teacher),
        method=str(args["method"]),
        distill_weight=float(dw),
        balance=None if bal is None else float(bal),
        teacher_val=args["teacher_val"],
        class_map=class_map,
        term_weights=term_weights,
        catchup=float(catchup),
        catchup_pace=float(pace),
        **unlabeled,
        terms=terms,
    )


def _number(value: Any, key: str, low: float, high: float | None = None, low_open: bool = False) -> float:
    """``value`` as a float in ``[low, high]`` (``(low, high)`` with ``low_open``), else a one-line `KDError`."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float))
    ok = ok and (value > low if low_open else value >= low) and (high is None or value < high)
    if not ok:
        lo = f"> {low:g}" if low_open else f">= {low:g}"
        raise KDError(f"{key} must be a number {lo}{'' if high is None else f' and < {high:g}'}, got {value!r}")
    return float(value)


def _unlabeled_keys(args: dict[str, Any]) -> dict[str, Any]:
    """The checked unlabeled-image keys (``unlabeled``, ``unlabeled_ratio``, ``unlabeled_weight``, ``pseudo_conf``).

    Examples:
        >>> _unlabeled_keys({"unlabeled": "raw/", "unlabeled_ratio": 2, "unlabeled_weight": 1, "pseudo_conf": 0.4})
        {'unlabeled': 'raw/', 'unlabeled_ratio': 2.0, 'unlabeled_weight': 1.0, 'pseudo_conf': 0.4}
    """
    src = args.get("unlabeled")
    if isinstance(src, Path):
        src = str(src)
    paths = isinstance(src, (list, tuple)) and all(isinstance(x, str) for x in src)
    if not (src is None or src is False or isinstance(src, str) or paths) or src == "":
        raise KDError(f"unlabeled must be a folder of images or a .txt list of image paths (False: none), got {src!r}")
    return {
        "unlabeled": list(src) if isinstance(src, tuple) else src,
        "unlabeled_ratio": _number(args.get("unlabeled_ratio", 1.0), "unlabeled_ratio", 0, low_open=True),
        "unlabeled_weight": _number(args.get("unlabeled_weight", 1.0), "unlabeled_weight", 0),
        "pseudo_conf": _number(args.get("pseudo_conf", 0.5), "pseudo_conf", 0, 1, low_open=True),
    }


def _term_weights(value: Any) -> dict[str, float] | None:
    """``term_weights=`` as ``{term name: weight >= 0}``, or None.

    Examples:
        >>> _term_weights({"cwd": 2}), _term_weights(None)
        ({'cwd': 2.0}, None)
    """
    if value is None or value == "" or value == {}:
        return None
    ok = isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0
        for k, v in value.items()
    )
    if not ok:
        raise KDError(
            f"term_weights must map term names to weights >= 0, e.g. term_weights={{cwd: 2.0}}, got {value!r}"
        )
    return {k: float(v) for k, v in value.items()}


def _apply_term_weights(terms: list[TermSpec], weights: dict[str, float] | None, method: str) -> list[TermSpec]:
    """The terms with the fixed weights of ``weights`` (automatic weight off for those), checked by name."""
    if not weights:
        return terms
    names = [t.name for t in terms]
    for k in weights:
        if k not in names:
            raise KDError(
                f"term_weights names '{k}', which is no term of method '{method}'.{suggest(k, names)} "
                f"Its terms: {names}"
            )
    return [dataclasses.replace(t, weight=weights[t.name], balance=0.0) if t.name in weights else t for t in terms]


def _class_map(value: Any) -> dict[int, int] | None:
    """``class_map=`` as ``{student index: teacher index}`` (from a dict, or a list in student order), or None.

    Examples:
        >>> _class_map([2, 0]), _class_map({"1": 4}), _class_map(None)
        ({0: 2, 1: 0}, {1: 4}, None)
    """
    if value is None or value == "" or value == {} or value == []:
        return None
    pairs = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, (list, tuple)) else None
    try:
        out = {int(k): int(v) for k, v in pairs} if pairs is not None else None
    except (TypeError, ValueError):
        out = None
    if out is None or any(isinstance(v, bool) for v in (value.values() if isinstance(value, dict) else value)):
        raise KDError(
            f"class_map must map student class indices to teacher class indices, e.g. class_map=[2, 0, 7] or "
            f"class_map={{0: 2, 1: 0, 2: 7}}, got {value!r}"
        )
    return out


def run_config(
    kd_args: dict[str, Any],
    overrides: dict[str, Any],
    carried: KDConfig | None,
    read_saved: Callable[[str | Path], dict[str, Any]],
) -> KDConfig:
    """Choose the configuration of a run: a DDP worker's carried one, a resumed run's saved one, or a new one.

    Args:
        kd_args (dict): The KD keys given to the trainer.
        overrides (dict): The Ultralytics arguments (``resume``, ``model`` pick the checkpoint a resumed run reads).
        carried (KDConfig | None): The configuration the parent's callbacks carried to a DDP worker.
        read_saved (Callable): Returns the KD config dict saved in a checkpoint (`yolokd.checkpoint.saved_config`).

    Returns:
        (KDConfig): ``carried`` in a DDP worker; on resume the saved one (``teacher=`` may relocate its teacher, other
        KD keys are ignored with a warning); else the validated ``kd_args``.
    """
    if carried is not None and not kd_args:
        return carried
    if not overrides.get("resume"):
        return build_config(kd_args)
    resume = overrides["resume"]
    saved = read_saved(resume if isinstance(resume, (str, Path)) else overrides.get("model"))
    if not saved and "teacher" not in kd_args:
        raise KDError("resume checkpoint holds no yolokd configuration; pass teacher= and method=")
    if ignored := sorted(k for k in kd_args if k != "teacher"):
        from ultralytics.utils import LOGGER

        LOGGER.warning(f"{PREFIX}resume ignores {ignored}, using the checkpoint's distillation configuration")
    return build_config({**saved, **({"teacher": kd_args["teacher"]} if "teacher" in kd_args else {})})
