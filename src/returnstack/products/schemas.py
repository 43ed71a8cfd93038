from typing import Annotated

from pydantic import BaseModel, Field, StrictFloat

from returnstack.kit.schemas import Schema

ProductId = Annotated[str, Field(min_length=1, max_length=128)]
MAX_RANKED = 1000


class Figures(BaseModel):
    units_sold: int
    units_returned: int
    return_rate: float = Field(description="units_returned / units_sold, or 0.")


class CategoryFigures(Figures):
    path: str


class Reported(BaseModel):
    units_sold: int
    units_returned: int
    refunded: dict[str, int] = Field(description="Minor units per currency.")


class ProductStats(BaseModel):
    product_id: str
    category: str | None = Field(description="Of the product's latest verified line naming one.")
    units_sold: int = Field(description="Verified and reported.")
    units_returned: int = Field(
        description="Units back: recorded returns, lifecycle returns once received, reported."
    )
    return_rate: float = Field(description="units_returned / units_sold, or 0 if none sold.")
    smoothed_return_rate: float = Field(
        description="(min(units_returned, units_sold) + prior_strength * prior_rate) / "
        "(units_sold + prior_strength)"
    )
    prior_rate: float
    prior_strength: float = Field(description="Units the prior weighs (a server setting).")
    prior_source: str = Field(description='"category" or "tenant".')
    prior_category: str | None = Field(description="The category path used as the prior.")
    refunded: dict[str, int] = Field(description="Minor units per currency.")
    reasons: dict[str, int] = Field(description="Units returned per reason code.")
    by_variant: dict[str, Figures]
    by_channel: dict[str, Figures]
    by_store: dict[str, Figures]
    categories: list[CategoryFigures] = Field(
        description="The rollups of the product's category path, nearest first."
    )
    reported: Reported = Field(description="The part of the figures from reported events.")


class ProductPage(BaseModel):
    data: list[ProductStats]
    next_cursor: str | None


class RankingRequest(Schema):
    product_ids: list[ProductId] = Field(min_length=1, max_length=MAX_RANKED)
    # StrictFloat takes JSON integers too (not booleans or strings): one type, so an error
    # names the field itself rather than each member of a union.
    scores: dict[ProductId, StrictFloat] | None = Field(
        None, description="Base scores (0 or more) from your search engine; default 1.0."
    )
    return_weight: StrictFloat = Field(
        1.0, ge=0, le=100, description="How strongly returns demote: 0 ignores them."
    )


class RankedProduct(BaseModel):
    product_id: str
    score: float = Field(description="base_score * adjustment")
    base_score: float
    adjustment: float = Field(description="(1 - smoothed_return_rate) ^ return_weight")
    smoothed_return_rate: float
    return_rate: float
    units_sold: int
    units_returned: int
    prior_rate: float
    prior_strength: float
    prior_source: str
    prior_category: str | None
    known: bool = Field(description="False for a product never sold or returned.")


class Ranking(BaseModel):
    ranking: list[RankedProduct]


class ReportRow(BaseModel):
    group: str | None
    returns: int
    units_returned: int
    refunded: int = Field(description="Minor units of the report's currency.")
    units_sold: int | None = Field(description="Null when grouped by reason.")
    return_rate: float | None = Field(description="Null when grouped by reason.")


class Report(BaseModel):
    data: list[ReportRow]
