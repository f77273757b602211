"""The lab's own code: the notebooks' cells tagged ``lab``, the one source of what the handout asks the student to write.

Why: the lab is read and changed in the notebooks (the caption encoding and the Dataset in 01; the projection head, the
image model, the InfoNCE loss and the training step in 02; Recall@K and the results CSV in 03). Those cells are the
code that runs everywhere: in their notebook, in ``python -m helpers.train`` (also under ``torchrun``), in 03 and 05
reading a finished run, and in the tests. Nothing keeps a second copy by hand: outside a notebook's kernel the cells
are read from the ``.ipynb`` file and executed (as d2l.ai runs its ``#@save`` cells, without the generated module
that could fall out of date).

A :class:`LabCode` is the text of those cells, and what executing them defines. A notebook's kernel hands over its
own cells (:meth:`LabCode.from_kernel`: a student's edit included, even one never saved to disk), the digest of the
cells a run trains with is part of the run's identity (any change in a cell, a constant or a comment, is a new run),
and a run keeps their text in its checkpoint, so 03 and 05 rebuild the model the run trained (:meth:`from_record`).

The cells import only from the standard library, torch, torchvision and transformers (a test checks it): they reach
no part of ``helpers/``, so this module, in the core, executes them without reaching above the core.
"""

from __future__ import annotations

import ast
import hashlib
import json
import linecache
import os
import sysconfig
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

LAB_TAG = "lab"  # the cells of the lab's own code (a notebook's cell metadata "tags")
PROJECT_DIR = Path(__file__).resolve().parents[2]  # where the notebooks sit, beside helpers/
NOTEBOOKS = {"01": "01_dataset_prep.ipynb", "02": "02_train_clip.ipynb", "03": "03_evaluate_clip.ipynb", "04": "04_ablation.ipynb"}
DATA = ("01",)  # the cells that make and read the data (the caption encoding, the Dataset): the caption caches record them
TRAINING = ("01", "02")  # the cells a training run executes (the Dataset; the head, model, loss, step): its identity
EVALUATION = ("03",)  # the cells 03 scores a run with
ENCODING = "01:caption-encoding"  # the cell whose edit changes the cached embeddings (the others only read them)


class YourCodeError(RuntimeError):
    """The lab's code as the student wrote it (a notebook cell, a modification) returned something the run cannot use:
    the message names the cell and what came back, instead of an error from deep inside torch."""


def your_frame(exc: BaseException) -> str | None:
    """Where in the student's code ``exc`` was raised: the innermost frame of a lab cell (as the kit executes it) or of a
    cell of this notebook's kernel (a modification, an edited lab cell), e.g. "`forward`, line 12 of the lab cell
    `projection-head` of 02_train_clip.ipynb"; None when no frame is theirs (the kit's or a library's own error)."""
    found, tb = None, exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        where = _students_file(code.co_filename)
        if where is not None:
            found = f"`{code.co_name}`, line {tb.tb_lineno} of {where}"
        tb = tb.tb_next
    return found


def _students_file(filename: str) -> str | None:
    """How to name ``filename`` when it holds the student's code (a lab cell, a kernel's cell, a file of their own such as
    ``--modification mine.py``); None for the kit (helpers/), an installed library or Python's own modules."""
    if filename.startswith("<lab cell "):
        key = filename[len("<lab cell ") :].split(" ", 1)[0]  # "02:projection-head"
        notebook, _, cell_id = key.partition(":")
        return f"the lab cell `{cell_id}` of {NOTEBOOKS.get(notebook, notebook)}"
    if "ipykernel" in filename or filename.startswith("<ipython-input"):
        return "a cell of this notebook"
    if filename.startswith("<"):
        return None  # frozen modules, exec'd strings of libraries
    path = Path(filename).resolve()
    if path.is_relative_to(PROJECT_DIR / "helpers") or {"site-packages", "dist-packages"} & set(path.parts):
        return None
    if path.is_relative_to(Path(sysconfig.get_paths()["stdlib"]).resolve()):
        return None
    return path.name


def as_your_error(exc: BaseException, what: str) -> YourCodeError | None:
    """``exc`` as a :class:`YourCodeError` naming the student's cell and line (``what``: "on the first training step"),
    or None when it was not raised in their code (then it propagates as it is)."""
    place = your_frame(exc)
    if place is None:
        return None
    return YourCodeError(f"Your code raised {type(exc).__name__} {what}, in {place}: {exc}")


def came_back(value: Any) -> str:
    """What a student's function returned, in words: "a tensor of shape (32, 512) (torch.float32)", or "a float"."""
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return f"a tensor of shape {tuple(value.shape)} ({value.dtype})"
    return f"a {type(value).__name__}"


def call_yours(lab: LabCode, name: str, *args: Any, check: Callable[[Any], str | None] | None = None, **kwargs: Any) -> Any:
    """Call the lab's ``name`` (as the kernel ran its cell) where the kit scores with it, and name the student's cell when
    it goes wrong: an exception raised in their code becomes "Your code raised … in `recall_at_k`, line 9 of the lab cell
    …", and a return that ``check`` refuses (it says what came back and what the kit needs) becomes "Your `recall_at_k`
    (the lab cell …) returned …". Out-of-memory and errors of the kit or a library pass through unchanged."""
    try:
        out = getattr(lab, name)(*args, **kwargs)
    except YourCodeError:
        raise
    except Exception as exc:
        named = None if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError" else as_your_error(exc, f"in `{name}`")
        if named is None:
            raise
        raise named from exc
    problem = check(out) if check is not None else None
    if problem:
        raise YourCodeError(f"Your `{name}` ({lab.defining(name).where}) returned {problem}")
    return out


class LabCodeError(RuntimeError):
    """A lab cell is missing, cannot run, or does not define what the kit calls."""


@dataclass(frozen=True)
class LabCell:
    """One cell tagged ``lab``: its notebook ("02"), its cell id and its source, with the names it defines."""

    notebook: str
    cell_id: str
    source: str

    def __post_init__(self) -> None:
        # one spelling of a cell's text: the .ipynb holds it without a final newline, a kernel's linecache with one
        object.__setattr__(self, "source", self.source.rstrip("\n"))

    @property
    def key(self) -> str:
        return f"{self.notebook}:{self.cell_id}"

    @property
    def where(self) -> str:
        """How a student finds the cell: ``the lab cell `clip-loss` of 02_train_clip.ipynb``."""
        return f"the lab cell `{self.cell_id}` of {NOTEBOOKS.get(self.notebook, self.notebook)}"

    def defines(self) -> list[str]:
        """The functions and classes the cell defines at its top level (what the kit may call)."""
        try:
            tree = ast.parse(self.source)
        except SyntaxError:
            return []
        return [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))]

    def binds(self) -> set[str]:
        """Every name the cell binds at its top level (functions, classes, constants, imports): none is a setting."""
        try:
            tree = ast.parse(self.source)
        except SyntaxError:
            return set()
        names: set[str] = set()
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
                names.add(node.name)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names.update((a.asname or a.name).split(".")[0] for a in node.names)
            elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
        return names


@dataclass(frozen=True)
class LabHook:
    """A part of a modification whose code is a lab cell (notebook 04's ``head_ln``, ``CaptionSafeAugment``): the run's
    own lab code resolves it (:meth:`resolve`: a kernel's edit included); called as it is, it runs the notebooks'."""

    name: str

    def resolve(self, lab: LabCode) -> Any:
        return getattr(lab, self.name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return getattr(LabCode.shipped(), self.name)(*args, **kwargs)


class LabCode:
    """The lab cells' text, executed once per object into one namespace; attributes are what the cells define."""

    def __init__(self, cells: Iterable[LabCell]):
        self.cells: tuple[LabCell, ...] = tuple(cells)
        self._namespace: dict[str, Any] | None = None

    # ----------------------------------------------------------------- where the text comes from
    @classmethod
    def shipped(cls, project_dir: str | os.PathLike | None = None) -> LabCode:
        """The cells as the notebooks on disk hold them (``python -m helpers.train``, 03 in a fresh kernel, the tests)."""
        return _shipped(str(Path(project_dir or PROJECT_DIR).resolve()))

    @classmethod
    def from_kernel(cls, namespace: dict[str, Any], project_dir: str | os.PathLike | None = None) -> LabCode:
        """The cells as this notebook's kernel ran them: a cell the kernel ran (it defines the cell's functions or classes
        from a cell of its own) is taken as run, edits included; the others as the notebooks on disk hold them."""
        out = []
        for cell in cls.shipped(project_dir).cells:
            texts = {name: text for name in cell.defines() if (text := _kernel_cell_text(namespace.get(name))) is not None}
            ran = next(iter(texts.values()), None)
            if ran is not None and (len(set(texts.values())) > 1 or set(LabCell("", "", ran).defines()) < set(cell.defines())):
                _split_definition(cell, texts)
            out.append(cell if ran is None else LabCell(cell.notebook, cell.cell_id, ran))
        return cls(out)

    @classmethod
    def from_record(cls, record: dict[str, str] | None, fallback: LabCode | None = None) -> LabCode:
        """The cells a run stored (``{"02:clip-loss": source, ...}``); the notebooks' for the cells it did not store."""
        base = fallback or cls.shipped()
        record = record or {}
        if all(base.sources(NOTEBOOKS).get(k) == v for k, v in record.items()):
            return base  # the same text: the same object, executed once
        return cls(LabCell(c.notebook, c.cell_id, record.get(c.key, c.source)) for c in base.cells)

    # ----------------------------------------------------------------- what a run records
    def sources(self, notebooks: Iterable[str] = TRAINING) -> dict[str, str]:
        """``{"02:clip-loss": source, ...}`` of the cells of ``notebooks``: plain strings, for a checkpoint or JSON."""
        wanted = set(notebooks)
        return {c.key: c.source for c in self.cells if c.notebook in wanted}

    def digest(self, notebooks: Iterable[str] = TRAINING) -> str:
        """16 hex of the sha256 of those cells' text: part of a run's identity (and of 03's results)."""
        return hashlib.sha256(json.dumps(self.sources(notebooks), sort_keys=True).encode()).hexdigest()[:16]

    def edited(self, notebooks: Iterable[str] = TRAINING, project_dir: str | os.PathLike | None = None) -> dict[str, str]:
        """The cells whose text differs from the notebooks on disk: what the report shows as the student's code."""
        shipped = LabCode.shipped(project_dir).sources(notebooks)
        return {k: v for k, v in self.sources(notebooks).items() if shipped.get(k) != v}

    def binds(self) -> set[str]:
        """The names the lab cells bind: a notebook's UPPERCASE constants among them are code, not settings."""
        return set().union(*(c.binds() for c in self.cells))

    def defining(self, name: str) -> LabCell:
        """The cell that defines the function or class ``name``."""
        found = next((c for c in self.cells if name in c.defines()), None)
        if found is None:
            raise LabCodeError(f"No lab cell defines `{name}`: a lab cell may change its code but keeps its name and arguments.")
        return found

    def cell(self, key: str) -> LabCell:
        return next(c for c in self.cells if c.key == key)

    # ----------------------------------------------------------------- what the cells define
    @property
    def namespace(self) -> dict[str, Any]:
        """Every cell executed in notebook order into one namespace (as in a kernel), once per object."""
        if self._namespace is None:
            namespace: dict[str, Any] = {"__name__": "clip_lab", "__builtins__": __builtins__}
            for cell in self.cells:
                filename = f"<lab cell {cell.key} ({NOTEBOOKS.get(cell.notebook, cell.notebook)})>"
                linecache.cache[filename] = (len(cell.source), None, cell.source.splitlines(True), filename)  # tracebacks
                try:
                    exec(compile(cell.source, filename, "exec"), namespace)
                except Exception as exc:
                    raise LabCodeError(f"{cell.where} does not run ({type(exc).__name__}: {exc}): fix the cell and run it again") from exc
            self._namespace = namespace
        return self._namespace

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        namespace = self.namespace
        if name not in namespace:
            raise LabCodeError(
                f"The kit calls `{name}`, which no lab cell defines ({', '.join(c.cell_id for c in self.cells)}): "
                "a lab cell may change its code but keeps its name and arguments."
            )
        return namespace[name]

    def __repr__(self) -> str:
        return f"LabCode({len(self.cells)} cells, training {self.digest()})"


@cache
def _shipped(project_dir: str) -> LabCode:
    """One object per project folder, so the notebooks' cells are executed once per process, whoever asks."""
    return LabCode(_cells_on_disk(project_dir))


@cache
def _cells_on_disk(project_dir: str) -> tuple[LabCell, ...]:
    """The tagged cells of the notebooks in ``project_dir`` (read once per process: a file's text, no state of ours)."""
    cells = []
    for number, name in NOTEBOOKS.items():
        path = Path(project_dir) / name
        try:
            notebook = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise LabCodeError(
                f"{path} is missing: the lab's code lives in the notebooks' cells tagged {LAB_TAG!r}. Run from a clone of the "
                "repository (the notebooks beside helpers/)."
            ) from None
        for cell in notebook["cells"]:
            if cell["cell_type"] == "code" and LAB_TAG in cell.get("metadata", {}).get("tags", []):
                source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
                cells.append(LabCell(number, cell.get("id") or f"cell-{len(cells)}", source))
    return tuple(cells)


def _split_definition(cell: LabCell, texts: dict[str, str]) -> None:
    """Refuse a lab cell whose functions this kernel took from different cells (``recall_at_k`` defined again in a cell
    of its own), or from a cell that lacks some of them: the run would record one cell's text and score with another's,
    so the student's change could be silently left out of what is recorded, or of what runs."""
    names = ", ".join(f"`{n}`" for n in cell.defines())
    fix = (f"Make the change in {cell.where} itself, keeping {names}, and run that cell (or restart the kernel and run "
           "all): the run records that cell's text, and scores with it.")  # fmt: skip
    if len(set(texts.values())) > 1:
        found = ", ".join(f"`{n}`" for n in texts)
        raise LabCodeError(f"{cell.where} defines {names}, but this kernel has {found} from different cells (one of them "
                           f"defined again in a cell of its own). {fix}")  # fmt: skip
    lacking = ", ".join(f"`{n}`" for n in cell.defines() if n not in LabCell("", "", next(iter(texts.values()))).defines())
    raise LabCodeError(f"The cell this kernel ran for `{next(iter(texts))}` does not define {lacking}, which {cell.where} "
                       f"defines. {fix}")  # fmt: skip


def _kernel_cell_text(obj: Any) -> str | None:
    """The whole text of the notebook cell that defined ``obj`` in this kernel (IPython keeps each executed cell in
    ``linecache``), or None for an object not defined by a cell (absent, built in, or executed by :class:`LabCode`)."""
    if obj is None:
        return None
    code = getattr(getattr(obj, "__func__", obj), "__code__", None)
    if code is None and isinstance(obj, type):
        code = next((getattr(getattr(m, "__func__", m), "__code__", None) for m in vars(obj).values()
                     if getattr(getattr(m, "__func__", m), "__code__", None) is not None), None)  # fmt: skip
    if code is None or code.co_filename.startswith("<lab cell "):
        return None  # not a cell's, or LabCode's own execution of the notebooks' text
    if Path(code.co_filename).is_file() and "ipykernel" not in code.co_filename:
        return None  # defined in a module on disk, not by a cell of this kernel
    lines = linecache.getlines(code.co_filename)
    return "".join(lines) if lines else None
