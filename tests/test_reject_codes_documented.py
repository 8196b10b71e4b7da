"""Every reject code the pipeline can emit is documented, and no documented code is invented.

Why: the rejects table is how a user learns why a row vanished, and its ``code`` column only
helps if the code is explained. Codes are added by whoever hardens a stage; this test keeps the
README's "Bad input" table and docs/formats.md §8 in step with the code, both ways.

The codes are read from the source (no stage runs): the constant passed in a reject position —
``run.reject(id, CODE, …)``, ``Reject(id, stage, CODE, …)``, the first argument of the error
types that carry a code (``ImageError``, ``EntryError``, ``RawInputError``,
``AnnotationError``), an adapter's ``unusable(…, CODE, reason)`` annotation row, the sections
stage's ``ParsedReport(…, CODE, cause)`` and ``return (CODE, reason)`` of the helpers typed
``tuple[str, str]`` — with module-level string constants resolved by name.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CODE = re.compile(r"[a-z]+(?:_[a-z]+)+")
#: Call name → index of the positional argument that is the reject code.
CODE_ARGUMENT = {
    "reject": 1,
    "Reject": 2,
    "ImageError": 0,
    "EntryError": 0,
    "RawInputError": 0,
    "ParsedReport": 5,
    "AnnotationError": 0,
    "unusable": 4,
}


def _call_name(func: ast.expr) -> str:
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def _module_constants(trees: list[ast.Module]) -> dict[str, str]:
    constants: dict[str, str] = {}
    for tree in trees:
        for node in tree.body:
            if (
                isinstance(node, ast.Assign)
                and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)
            ):
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        constants[target.id] = node.value.value
    return constants


def _value(node: ast.expr, constants: dict[str, str]) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        return constants.get(node.id)
    return None


def emitted_codes() -> dict[str, str]:
    """code → one place (file:line) that emits it."""
    files = [
        p
        for p in sorted((ROOT / "pipeline").rglob("*.py"))
        if "labeler" not in p.relative_to(ROOT).parts  # the checkout itself may be "labeler"
    ]
    trees = [ast.parse(p.read_text(encoding="utf-8")) for p in files]
    constants = _module_constants(trees)
    found: dict[str, str] = {}
    for path, tree in zip(files, trees, strict=True):
        where = path.relative_to(ROOT)
        for node in ast.walk(tree):
            candidates: list[ast.expr] = []
            if isinstance(node, ast.Call):
                index = CODE_ARGUMENT.get(_call_name(node.func))
                if index is not None and len(node.args) > index:
                    candidates.append(node.args[index])
            elif (
                isinstance(node, ast.FunctionDef)
                and node.returns is not None
                and "tuple[str, str]" in ast.unparse(node.returns)
            ):
                for ret in ast.walk(node):
                    if isinstance(ret, ast.Return) and isinstance(ret.value, ast.Tuple):
                        candidates.append(ret.value.elts[0])
            for candidate in candidates:
                value = _value(candidate, constants)
                if value is not None and CODE.fullmatch(value):
                    found.setdefault(value, f"{where}:{candidate.lineno}")
    return found


def documented_codes(markdown: Path, heading: str) -> set[str]:
    """Codes in the first column of the table(s) under ``heading`` (up to the next heading)."""
    text = markdown.read_text(encoding="utf-8")
    start = text.index(heading)
    end = text.find("\n#", start + len(heading))
    codes: set[str] = set()
    for line in text[start : end if end != -1 else None].splitlines():
        if line.startswith("| `"):
            first_cell = line.split("|")[1]
            codes.update(re.findall(r"`([a-z]+(?:_[a-z]+)+)`", first_cell))
    return codes


def test_the_source_scan_finds_codes_of_every_kind() -> None:
    """The scan itself must work: one code from each way of emitting one."""
    found = emitted_codes()
    for code in (
        "duplicate_key",  # run.reject(id, "…")
        "unparsable_xml",  # Reject(id, stage, "…")
        "corrupt_image",  # ImageError("…")
        "bad_qid",  # EntryError("…")
        "path_outside_root",  # RawInputError(OUTSIDE_ROOT, …)
        "headers_only",  # ParsedReport(…, "…", cause)
        "empty_text",  # return ("…", reason) in a tuple[str, str] helper
        "image_missing",
        "box_cropped_out",  # AnnotationError("…")
        "bad_annotation",  # unusable(…, CODE, reason) in an adapter
    ):
        assert code in found, code


def test_every_emitted_code_is_in_the_readme_and_formats() -> None:
    found = emitted_codes()
    readme = documented_codes(ROOT / "README.md", "### Bad input")
    formats = documented_codes(ROOT / "docs" / "formats.md", "## 8.")
    missing_readme = {code: where for code, where in found.items() if code not in readme}
    missing_formats = {code: where for code, where in found.items() if code not in formats}
    assert missing_readme == {}, "add to README.md 'Bad input'"
    assert missing_formats == {}, "add to docs/formats.md §8"


def test_no_documented_code_is_invented() -> None:
    found = set(emitted_codes())
    readme = documented_codes(ROOT / "README.md", "### Bad input")
    formats = documented_codes(ROOT / "docs" / "formats.md", "## 8.")
    assert readme - found == set()
    assert formats - found == set()
    assert readme == formats
