"""The credit center's public feature catalogue (公共信用信息目录): metadata, not data.

Credit-service platforms publish which dimensions they hold, grouped by category, so that banks
can plan joint models without seeing a single value. This catalogue plays that role for the
synthetic city in :mod:`jointcredit.data.synthetic`, and gives binning, scorecards and reports
the information they need to treat each column correctly: whether it is numeric, ordinal or an
integer-coded category, and which special codes (e.g. ``-1`` = "not applicable") must get their
own bin instead of being treated as small numbers.

Conventions shared by every feature:

* Amounts are in 10,000 CNY (万元), the unit Chinese registration and tax records use.
* ``NaN`` means *no record matched* in that source (e.g. the enterprise's housing-fund account
  is not linked); it is not the same as zero and not the same as a special code.
* Flags are 0/1; ordinal codes increase with the order given in ``levels``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from jointcredit.data.uscc import GUANGZHOU_DISTRICTS

FeatureKind = Literal["numeric", "ordinal", "categorical", "flag"]
FEATURE_KINDS: tuple[str, ...] = ("numeric", "ordinal", "categorical", "flag")

#: The catalogue's categories, in the order platforms usually list them.
CATEGORIES: tuple[str, ...] = (
    "registration",
    "tax",
    "social_insurance",
    "utilities",
    "administrative",
    "judicial",
    "honours",
    "procurement",
    "ip",
)

#: Chinese and English titles of each category.
CATEGORY_TITLES: dict[str, tuple[str, str]] = {
    "registration": ("登记注册", "Registration"),
    "tax": ("纳税", "Tax"),
    "social_insurance": ("社保公积金", "Social insurance and housing fund"),
    "utilities": ("水电气", "Utilities"),
    "administrative": ("行政许可与处罚", "Administrative licences and penalties"),
    "judicial": ("司法", "Judicial"),
    "honours": ("荣誉资质", "Honours and qualifications"),
    "procurement": ("公共资源交易", "Public procurement"),
    "ip": ("知识产权", "Intellectual property"),
}


@dataclass(frozen=True)
class FeatureInfo:
    """Description of one credit-center feature.

    ``special_codes`` maps a numeric code that is *not* a measurement (e.g. ``-1.0``) to its
    meaning; ``levels`` maps each code of an ordinal or categorical feature to its label.
    """

    name: str
    category: str
    title_zh: str
    title_en: str
    kind: FeatureKind
    special_codes: dict[float, str] = field(default_factory=dict, hash=False)
    levels: dict[float, str] = field(default_factory=dict, hash=False)
    unit: str = ""

    def __post_init__(self) -> None:
        if self.category not in CATEGORIES:
            raise ValueError(f"{self.name}: unknown category {self.category!r}")
        if self.kind not in FEATURE_KINDS:
            raise ValueError(f"{self.name}: unknown kind {self.kind!r}")
        # Own copies with float keys, so lookups by a column's float64 value always work.
        object.__setattr__(
            self, "special_codes", {float(k): v for k, v in self.special_codes.items()}
        )
        object.__setattr__(self, "levels", {float(k): v for k, v in self.levels.items()})


#: GB/T 4754-2017 industry sections, encoded 0..19 in the order A..T.
INDUSTRY_SECTIONS: tuple[tuple[str, str, str], ...] = (
    ("A", "农、林、牧、渔业", "Agriculture, forestry, animal husbandry, fishery"),
    ("B", "采矿业", "Mining"),
    ("C", "制造业", "Manufacturing"),
    ("D", "电力、热力、燃气及水生产和供应业", "Electricity, heat, gas and water"),
    ("E", "建筑业", "Construction"),
    ("F", "批发和零售业", "Wholesale and retail"),
    ("G", "交通运输、仓储和邮政业", "Transport, storage and post"),
    ("H", "住宿和餐饮业", "Accommodation and catering"),
    ("I", "信息传输、软件和信息技术服务业", "Information technology and software"),
    ("J", "金融业", "Finance"),
    ("K", "房地产业", "Real estate"),
    ("L", "租赁和商务服务业", "Leasing and business services"),
    ("M", "科学研究和技术服务业", "Scientific research and technical services"),
    ("N", "水利、环境和公共设施管理业", "Water, environment and public facilities"),
    ("O", "居民服务、修理和其他服务业", "Resident services and repair"),
    ("P", "教育", "Education"),
    ("Q", "卫生和社会工作", "Health and social work"),
    ("R", "文化、体育和娱乐业", "Culture, sports and entertainment"),
    ("S", "公共管理、社会保障和社会组织", "Public administration and social organisations"),
    ("T", "国际组织", "International organisations"),
)

#: Registration districts of the synthetic city (Guangzhou), encoded 0..10.
DISTRICTS: tuple[tuple[str, str], ...] = tuple(GUANGZHOU_DISTRICTS.items())

#: Market-entity types, encoded 0..5. The USCC type character agrees with it: individual
#: businesses carry ``92``, farmers' cooperatives ``93``, all others ``91``.
ENTITY_TYPES: tuple[str, ...] = (
    "有限责任公司 limited liability company",
    "股份有限公司 joint-stock company",
    "个人独资企业 sole proprietorship",
    "合伙企业 partnership",
    "个体工商户 individual business",
    "农民专业合作社 farmers' cooperative",
)

TAX_GRADES: tuple[str, ...] = ("A", "B", "M", "C", "D")

_NO_ACCOUNT = "无独立账户 / no own account (e.g. shared meter)"


def _f(
    name: str,
    category: str,
    title_zh: str,
    title_en: str,
    kind: FeatureKind = "numeric",
    *,
    special: dict[float, str] | None = None,
    levels: dict[float, str] | None = None,
    unit: str = "",
) -> FeatureInfo:
    return FeatureInfo(name, category, title_zh, title_en, kind, special or {}, levels or {}, unit)


_FEATURES: tuple[FeatureInfo, ...] = (
    # registration -----------------------------------------------------------------------------
    _f(
        "industry_section",
        "registration",
        "行业门类",
        "Industry section (GB/T 4754-2017)",
        "categorical",
        levels={float(i): f"{c} {zh}" for i, (c, zh, _en) in enumerate(INDUSTRY_SECTIONS)},
    ),
    _f(
        "registered_capital_10k",
        "registration",
        "注册资本",
        "Registered capital",
        special={-1.0: "个体工商户无注册资本 / individual business, no registered capital"},
        unit="10k CNY",
    ),
    _f("years_since_founding", "registration", "成立年限", "Years since founding", unit="years"),
    _f(
        "district",
        "registration",
        "注册所在区",
        "Registration district",
        "categorical",
        levels={float(i): name for i, (_code, name) in enumerate(DISTRICTS)},
    ),
    _f(
        "enterprise_scale",
        "registration",
        "企业规模",
        "Enterprise scale",
        "ordinal",
        levels={0.0: "微型 micro", 1.0: "小型 small", 2.0: "中型 medium", 3.0: "大型 large"},
    ),
    _f(
        "entity_type",
        "registration",
        "市场主体类型",
        "Type of market entity",
        "categorical",
        levels={float(i): t for i, t in enumerate(ENTITY_TYPES)},
    ),
    _f(
        "legal_rep_changes_3y",
        "registration",
        "近3年法定代表人变更次数",
        "Legal representative changes, 3 years",
    ),
    _f(
        "shareholder_changes_3y",
        "registration",
        "近3年股东变更次数",
        "Shareholder changes, 3 years",
    ),
    # tax --------------------------------------------------------------------------------------
    _f(
        "tax_credit_grade",
        "tax",
        "纳税信用等级",
        "Tax credit grade (A best ... D worst)",
        "ordinal",
        special={-1.0: "未评价 / not rated (new taxpayer or individual business)"},
        levels={float(i): g for i, g in enumerate(TAX_GRADES)},
    ),
    _f("tax_paid_12m_10k", "tax", "近12个月纳税总额", "Tax paid, 12 months", unit="10k CNY"),
    _f("tax_paid_yoy", "tax", "纳税额同比增长率", "Tax paid, year-on-year growth", unit="ratio"),
    _f("tax_arrears_months_12m", "tax", "近12个月欠税月数", "Months in tax arrears, 12 months"),
    _f("invoice_count_12m", "tax", "近12个月开票张数", "Invoices issued, 12 months"),
    _f(
        "invoice_amount_12m_10k",
        "tax",
        "近12个月开票金额",
        "Invoiced amount, 12 months",
        unit="10k CNY",
    ),
    _f(
        "invoice_amount_trend",
        "tax",
        "开票金额趋势(近6月/前6月)",
        "Invoiced amount, last 6 over previous 6 months",
        special={-1.0: "前6个月无开票 / no invoices in the previous 6 months"},
        unit="ratio",
    ),
    _f("zero_filing_months_12m", "tax", "近12个月零申报月数", "Zero-filing months, 12 months"),
    # social insurance and housing fund --------------------------------------------------------
    _f("insured_headcount", "social_insurance", "社保参保人数", "Employees insured"),
    _f(
        "insured_headcount_change_12m",
        "social_insurance",
        "参保人数12个月变动率",
        "Change of insured headcount, 12 months",
        unit="ratio",
    ),
    _f(
        "social_insurance_paid_months_12m",
        "social_insurance",
        "近12个月社保正常缴纳月数",
        "Months of regular contributions, 12 months",
        special={-1.0: "无参保职工 / no insured employees"},
    ),
    _f(
        "social_insurance_arrears_months_12m",
        "social_insurance",
        "近12个月社保欠缴月数",
        "Months of contribution arrears, 12 months",
    ),
    _f(
        "housing_fund_headcount",
        "social_insurance",
        "公积金缴存人数",
        "Employees with housing fund contributions",
    ),
    _f(
        "housing_fund_arrears_months_12m",
        "social_insurance",
        "近12个月公积金欠缴月数",
        "Months of housing-fund arrears, 12 months",
    ),
    # utilities --------------------------------------------------------------------------------
    _f(
        "electricity_kwh_12m",
        "utilities",
        "近12个月用电量",
        "Electricity used, 12 months",
        special={-1.0: _NO_ACCOUNT},
        unit="kWh",
    ),
    _f(
        "electricity_trend_6m",
        "utilities",
        "用电量趋势(近6月/前6月)",
        "Electricity used, last 6 over previous 6 months",
        special={-1.0: "不适用 / not applicable (no own meter, or under a year of history)"},
        unit="ratio",
    ),
    _f(
        "electricity_arrears_12m",
        "utilities",
        "近12个月电费欠费次数",
        "Electricity bills in arrears, 12 months",
        special={-1.0: _NO_ACCOUNT},
    ),
    _f(
        "water_arrears_12m",
        "utilities",
        "近12个月水费欠费次数",
        "Water bills in arrears, 12 months",
        special={-1.0: _NO_ACCOUNT},
    ),
    _f(
        "gas_arrears_12m",
        "utilities",
        "近12个月燃气费欠费次数",
        "Gas bills in arrears, 12 months",
        special={-1.0: "无燃气账户 / no gas account"},
    ),
    # administrative ---------------------------------------------------------------------------
    _f("admin_licence_count", "administrative", "有效行政许可数", "Valid administrative licences"),
    _f(
        "admin_penalty_count_3y",
        "administrative",
        "近3年行政处罚次数",
        "Administrative penalties, 3 years",
    ),
    _f(
        "admin_penalty_amount_3y_10k",
        "administrative",
        "近3年行政处罚金额",
        "Administrative penalty amount, 3 years",
        unit="10k CNY",
    ),
    _f(
        "abnormal_operation_flag",
        "administrative",
        "列入经营异常名录",
        "On the list of abnormal operations",
        "flag",
    ),
    _f(
        "serious_violation_flag",
        "administrative",
        "列入严重违法失信名单",
        "On the list of serious violations",
        "flag",
    ),
    # judicial ---------------------------------------------------------------------------------
    _f(
        "judgments_defendant_3y",
        "judicial",
        "近3年作为被告的裁判文书数",
        "Judgments as defendant, 3 years",
    ),
    _f("enforcement_count_3y", "judicial", "近3年被执行记录数", "Enforcement records, 3 years"),
    _f(
        "enforcement_amount_3y_10k",
        "judicial",
        "近3年被执行标的金额",
        "Amount under enforcement, 3 years",
        unit="10k CNY",
    ),
    _f("dishonest_debtor_flag", "judicial", "失信被执行人", "Dishonest judgment debtor", "flag"),
    _f(
        "consumption_restriction_flag",
        "judicial",
        "限制高消费",
        "Consumption restriction order",
        "flag",
    ),
    # honours and qualifications ---------------------------------------------------------------
    _f("high_tech_flag", "honours", "高新技术企业", "High-tech enterprise", "flag"),
    _f(
        "specialized_sme_level",
        "honours",
        "专精特新等级",
        "Specialised and innovative SME level",
        "ordinal",
        levels={
            0.0: "无 none",
            1.0: "创新型中小企业 innovative SME",
            2.0: "专精特新中小企业 specialised SME (provincial)",
            3.0: '专精特新"小巨人" little giant (national)',
        },
    ),
    _f("honours_count", "honours", "荣誉表彰数", "Honours and commendations"),
    # public procurement -----------------------------------------------------------------------
    _f(
        "procurement_wins_3y",
        "procurement",
        "近3年政府采购中标次数",
        "Public procurement contracts won, 3 years",
    ),
    _f(
        "procurement_amount_3y_10k",
        "procurement",
        "近3年中标金额",
        "Public procurement amount won, 3 years",
        unit="10k CNY",
    ),
    # intellectual property --------------------------------------------------------------------
    _f("patent_count", "ip", "有效专利数", "Valid patents"),
    _f("trademark_count", "ip", "注册商标数", "Registered trademarks"),
)

#: The catalogue, keyed by feature name, in table column order.
CENTER_CATALOGUE: dict[str, FeatureInfo] = {f.name: f for f in _FEATURES}


def category_of(name: str) -> str:
    """The catalogue category of a credit-center feature; ``KeyError`` if it is not listed."""
    try:
        return CENTER_CATALOGUE[name].category
    except KeyError:
        raise KeyError(f"{name!r} is not in the credit center's feature catalogue") from None


def catalogue_records() -> list[dict[str, object]]:
    """The catalogue as plain records (for docs, JSON and the bank's planning)."""
    return [
        {
            "name": f.name,
            "category": f.category,
            "title_zh": f.title_zh,
            "title_en": f.title_en,
            "kind": f.kind,
            "unit": f.unit,
            "special_codes": {str(k): v for k, v in f.special_codes.items()},
            "levels": {str(k): v for k, v in f.levels.items()},
        }
        for f in _FEATURES
    ]
