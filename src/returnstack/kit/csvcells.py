"""CSV cells a spreadsheet will not run (API.md 1; OWASP "CSV injection").

Excel, LibreOffice and Google Sheets read a cell starting with `=`, `+`, `-` or `@` as a
formula (and a leading tab or carriage return can hide one). Text cells starting so get a
single quote in front, which spreadsheets show as text. Numbers are written as they are: a
negative amount (`-150`) is a number, not a formula, and stays one for whoever sums it.
"""

from typing import Any

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(cell: Any) -> Any:
    if isinstance(cell, str) and cell.startswith(FORMULA_STARTS):
        return "'" + cell
    return cell
