"""Path parameters and the list filters of the returns API, declared once."""

from typing import Annotated

from fastapi import Path, Query

from returnstack.returns.schemas import ReturnQuery

ReturnId = Annotated[str, Path(description="`ret_...`, or the number: `R-000123`.")]
AttachmentId = Annotated[str, Path(description="`att_...`")]
ListFilters = Annotated[ReturnQuery, Query()]
