"""Exceptions of crmlab: one base class, and an input error that says exactly what to fix.

Every message is French because users read it; attributes stay in English.
"""

from __future__ import annotations


class CrmlabError(Exception):
    """Base class of every error raised by crmlab."""


class InputError(CrmlabError):
    """Bad input (params, files, values): the user must fix something.

    Parameters
    ----------
    message : str
        French message saying what is wrong.
    file : str, optional
        File concerned (path as the user wrote it or resolved).
    column : str, optional
        Column concerned.
    row : int, optional
        Line of the file concerned (text files: the header is line 1; Excel: sheet row;
        Parquet: 1-based record index).
    hint : str, optional
        French sentence saying what to do.

    Notes
    -----
    The command line exits with code 2 on this error.
    """

    exit_code = 2

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        column: str | None = None,
        row: int | None = None,
        hint: str | None = None,
    ) -> None:
        self.message = message
        self.file = file
        self.column = column
        self.row = row
        self.hint = hint
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = []
        if self.file:
            where.append(f"fichier « {self.file} »")
        if self.column:
            where.append(f"colonne « {self.column} »")
        if self.row is not None:
            where.append(f"ligne {self.row}")
        text = self.message
        if where:
            text = f"{text} ({', '.join(where)})"
        if self.hint:
            text = f"{text}. {self.hint}"
        return text


class ParamsError(InputError):
    """A parameter is missing, unknown, of the wrong type or out of range."""


class CheckError(CrmlabError):
    """A step's own output check failed: a bug or an inconsistent database, not user input."""
