"""Maths answers: reading a final number, checking calculator annotations, and turning the solutions
instruction-tuned teachers write (LaTeX, \\boxed{}, "The answer is", bare equations) into GSM8K's format."""

from __future__ import annotations

import ast
import operator
import re

NUMBER_RE = re.compile(r"-?[\d,]*\.?\d+")
CALCULATION_RE = re.compile(r"<<([^<>=]*)=([^<>]*)>>")  # GSM8K calculator annotations <<expression=result>>


def _clean_number(s: str) -> str:
    return s.replace(",", "").replace("$", "").strip().rstrip(".")


def final_answer(answer: str) -> str | None:
    """The number after '####' (GSM8K's convention), commas and '$' stripped."""
    m = re.search(r"####\s*\$?\s*(-?[\d,]*\.?\d+)", answer)
    return _clean_number(m.group(1)) if m else None


def predicted_number(output: str) -> str | None:
    """As the reference code: the '####' answer if present, else the last number in the output."""
    fa = final_answer(output)
    if fa is not None:
        return fa
    nums = NUMBER_RE.findall(output.replace("$", ""))
    nums = [n for n in nums if any(c.isdigit() for c in n)]
    return _clean_number(nums[-1]) if nums else None


def numbers_equal(a: str, b: str) -> bool:
    try:
        return abs(float(_clean_number(a)) - float(_clean_number(b))) < 1e-6
    except ValueError:
        return False


_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
        ast.Pow: operator.pow, ast.Mod: operator.mod, ast.FloorDiv: operator.floordiv}


def safe_eval(expr: str) -> float:
    """Evaluate + - * / ** % // on numbers only (no names, no calls): the calculator annotations."""
    expr = expr.replace(",", "").replace("$", "").replace("x", "*").replace("×", "*").replace("÷", "/")

    def ev(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return float(node.value)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            v = ev(node.operand)
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            left, right = ev(node.left), ev(node.right)
            if isinstance(node.op, ast.Pow) and abs(right) > 64:
                raise ValueError("exponent too large")
            return _OPS[type(node.op)](left, right)
        raise ValueError("not arithmetic")

    if len(expr) > 200:
        raise ValueError("expression too long")
    return ev(ast.parse(expr.strip(), mode="eval"))


def wrong_calculations(answer: str) -> list[str]:
    """Calculator annotations `<<a*b=c>>` whose result does not match their expression."""
    bad = []
    for expr, result in CALCULATION_RE.findall(answer):
        try:
            want = safe_eval(expr)
            got = float(_clean_number(result))
        except (ValueError, SyntaxError, ZeroDivisionError, OverflowError, TypeError, RecursionError):
            bad.append(f"cannot check <<{expr}={result}>>")
            continue
        # The written result may be rounded to the precision it shows (GSM8K writes 10/3=3.33).
        shown = _clean_number(result)
        decimals = len(shown.split(".")[1]) if "." in shown else 0
        if abs(want - got) > max(0.5 * 10.0**-decimals, 1e-9 * abs(want)):
            bad.append(f"<<{expr}={result}>> should be {want:g}")
    return bad


# --------------------------------------------------------------------------- teacher solutions

_NUM = r"-?\d[\d,]*(?:\.\d+)?"
_TERM = rf"\$?\(?\s*{_NUM}\s*\)?%?"
_OP = r"(?:[-+*/×÷]|\s[xX]\s)"
_EQUATION = re.compile(rf"(?<![\w.<=])({_TERM}(?:\s*{_OP}\s*{_TERM})+)\s*=\s*(\$?)\s*({_NUM})(?!\d|\.\d|>>)")
_BOXED = re.compile(r"\\boxed\{\s*\$?\s*(" + _NUM + r")\s*\}")
_ANSWER_IS = re.compile(r"answer\s*(?:is|:)\s*\$?\s*\**\s*(" + _NUM + ")", re.IGNORECASE)


def final_number(text: str) -> str | None:
    """The final number a solution states: '#### n', else the last \\boxed{n}, else the last 'the answer is
    n', else the last number (instruction-tuned models rarely write GSM8K's '####')."""
    for pattern in (re.compile(r"####\s*\$?\s*(" + _NUM + ")"), _BOXED, _ANSWER_IS):
        found = pattern.findall(text)
        if found:
            return _clean_number(found[-1])
    return predicted_number(text)


def _annotate(segment: str) -> str:
    def one(m: re.Match[str]) -> str:
        expr, dollar, result = m.group(1).rstrip(), m.group(2), m.group(3)
        clean = re.sub(r"\s[xX]\s", "*", expr).replace("×", "*").replace("÷", "/").replace("$", "")
        clean = "".join(clean.split())
        return f"{expr} = {dollar}<<{clean}={result}>>{result}"

    return _EQUATION.sub(one, segment)


def normalise_solution(text: str) -> str:
    """A teacher's worked solution in GSM8K's form: LaTeX removed, every bare `a op b = c` written as
    `a op b = <<a op b=c>>c` (so the arithmetic check sees it), and a final '#### n' line taken from
    \\boxed{n} or 'the answer is n' when the solution has none. Nothing here makes wrong arithmetic pass:
    the annotations it adds carry the solution's own results, which wrong_calculations then checks."""
    s = re.sub(r"\\[()\[\]]", "", text)
    s = re.sub(r"\\[dt]?frac\{([^{}]+)\}\{([^{}]+)\}", r"\1/\2", s)
    for latex, plain in (("\\times", "*"), ("\\cdot", "*"), ("\\div", "/"), ("\\$", "$"), ("\\%", "%"),
                         ("\\,", ""), ("\\!", "")):
        s = s.replace(latex, plain)
    s = re.sub(r"\\text\{([^{}]*)\}", r"\1", s)
    final = final_answer(s)
    if final is None:
        stated = [m for p in (_BOXED, _ANSWER_IS) for m in p.findall(s)]
        final = _clean_number(stated[-1]) if stated else None
    s = _BOXED.sub(r"\1", s)
    # Annotate only outside existing <<...>> annotations, so a GSM8K-style solution is left as it is.
    parts = re.split(r"(<<[^<>]*>>)", s)
    s = "".join(p if p.startswith("<<") else _annotate(p) for p in parts)
    if final is not None and final_answer(s) is None:
        s = s.rstrip() + f"\n#### {final}"
    return s.strip()
