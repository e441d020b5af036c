#!/usr/bin/env python3
"""Writes tests/phones/corpus.csv: phone numbers written the ways people write them, each with what
Google's libphonenumber makes of it (its Python port, `phonenumbers`, pinned to the metadata version
of the Rust `phonenumber` crate the importer uses). The importer is never asked: this file is the
oracle that tests/phones.rs compares it with.

    python3 -m venv /tmp/pn && /tmp/pn/bin/pip install phonenumbers==9.0.33
    /tmp/pn/bin/python tests/phones/make_corpus.py > tests/phones/corpus.csv

Columns: the text as written, the --default-region (empty: none), then libphonenumber's verdict:
`e164` (empty when the number is not understood or not possible), `verdict` (`ok`, `unparsable`,
`extension`, or the possibility reason: `too_short`, `too_long`, `invalid_length`, `invalid_country_code`,
`local_only`), `valid` (in an assigned range) and `type` (MOBILE, FIXED_LINE, …).
"""

import csv
import sys

import phonenumbers
from phonenumbers import PhoneNumberFormat as F
from phonenumbers import PhoneNumberType as T
from phonenumbers import ValidationResult as V

TYPES = [T.MOBILE, T.FIXED_LINE, T.TOLL_FREE, T.PREMIUM_RATE, T.VOIP]
# A region whose international prefix is 00, for the `00` form.
IDD_00 = "EE"
# Callers whose international prefix is not plain 00.
CALLERS = ["US", "AU", "KR", "RU", "BR", "JP", "SG", "KH", "NG", "IL", "CO", "ID"]

FULL_WIDTH = str.maketrans("0123456789+-() ", "０１２３４５６７８９＋－（）\u3000")
ARABIC_INDIC = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")
PERSIAN = str.maketrans("0123456789", "۰۱۲۳۴۵۶۷۸۹")

REASONS = {
    V.IS_POSSIBLE_LOCAL_ONLY: "local_only",
    V.INVALID_COUNTRY_CODE: "invalid_country_code",
    V.TOO_SHORT: "too_short",
    V.INVALID_LENGTH: "invalid_length",
    V.TOO_LONG: "too_long",
}
TYPE_NAMES = {getattr(T, n): n for n in dir(T) if n.isupper()}


def verdict(text, region):
    try:
        number = phonenumbers.parse(text, region or None)
    except phonenumbers.NumberParseException:
        return ["", "unparsable", "", ""]
    # An extension cannot receive an SMS: the importer refuses what libphonenumber keeps apart.
    if number.extension:
        return ["", "extension", "", ""]
    reason = phonenumbers.is_possible_number_with_reason(number)
    if reason != V.IS_POSSIBLE:
        return ["", REASONS.get(reason, "impossible"), "", ""]
    return [
        phonenumbers.format_number(number, F.E164),
        "ok",
        str(phonenumbers.is_valid_number(number)).lower(),
        TYPE_NAMES[phonenumbers.number_type(number)],
    ]


def forms(region, number):
    """The ways people write one number, each with the --default-region it is read with."""
    cc = str(number.country_code)
    intl = phonenumbers.format_number(number, F.INTERNATIONAL)
    e164 = phonenumbers.format_number(number, F.E164)
    national = phonenumbers.format_number(number, F.NATIONAL)
    rest = intl[len(cc) + 2 :]
    yield e164, ""
    yield intl, ""
    yield intl.replace(" ", "-"), ""
    yield intl.replace(" ", "."), ""
    yield f"(+{cc}) {rest}", ""
    yield f"00{cc} {rest}", IDD_00
    yield f"00 {cc} {rest}", IDD_00
    yield national, region
    yield national.replace(" ", ""), region
    # The national significant number alone, as many exports keep it; with the calling code
    # but no + (`7 812…` in Russia); with 00, which is not every region's international prefix.
    nsn = phonenumbers.national_significant_number(number)
    yield nsn, region
    yield f"{cc}{nsn}", region
    yield f"{cc} {national}", region
    yield f"00{cc}{nsn}", region
    prefix = phonenumbers.PhoneMetadata.metadata_for_region(region).national_prefix
    if prefix and national.startswith(prefix):
        trunk = national[len(prefix) :].strip()
        yield f"+{cc} ({prefix}) {trunk}", ""
        yield f"+{cc} ({prefix}){trunk}", ""
        # A default region of another country must not change how +CC is read.
        yield f"+{cc} ({prefix}) {trunk}", "EE" if region != "EE" else "GB"
        # The trunk prefix written twice: stripped once, the rest judged as it is.
        yield f"+{cc} ({prefix}) {national}", ""
        yield f"{prefix} {national}", region
    # As a tel: URI (RFC 3966), in full-width characters (as Japanese input writes them), and
    # in Arabic-Indic digits.
    yield phonenumbers.format_number(number, F.RFC3966), ""
    yield intl.translate(FULL_WIDTH), ""
    yield national.translate(ARABIC_INDIC), region
    yield national.translate(PERSIAN), region
    # A 0 after the country code, where some countries' prefixes for parsing begin.
    yield f"+{cc} 0 {rest}", ""
    # As dialled from abroad, with the caller's own international prefix (011, 0011, 810,
    # carrier digits…), read with the caller's country as the default region.
    for caller in CALLERS:
        if caller != region:
            yield phonenumbers.format_out_of_country_calling_number(number, caller), caller
    # Wrong lengths, and a national number read under another country's rules.
    yield e164[:-2], ""
    yield e164 + "12", ""
    yield national, "EE" if region != "EE" else "US"


def main():
    out = csv.writer(sys.stdout, lineterminator="\n")
    out.writerow(["text", "region", "e164", "verdict", "valid", "type"])
    seen = set()
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for kind in TYPES:
            number = phonenumbers.example_number_for_type(region, kind)
            if number is None:
                continue
            for text, default in forms(region, number):
                if (text, default) in seen:
                    continue
                seen.add((text, default))
                out.writerow([text, default] + verdict(text, default))
    # The codes of international services (+800 freephone, +870 Inmarsat, +881 satellite
    # phones, …), which no region holds.
    for code in sorted(phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS):
        number = phonenumbers.example_number_for_non_geo_entity(code)
        if number is None:
            continue
        e164 = phonenumbers.format_number(number, F.E164)
        intl = phonenumbers.format_number(number, F.INTERNATIONAL)
        for text, default in [
            (e164, ""),
            (intl, ""),
            ("00" + intl[1:], IDD_00),
            (intl, "US"),
            (e164[:-2], ""),
            (e164 + "12", ""),
        ]:
            if (text, default) not in seen:
                seen.add((text, default))
                out.writerow([text, default] + verdict(text, default))
    # Forms the issue names, written by hand.
    for text, default in [
        ("+44 (0) 20 7946 0958", ""),
        ("+44 (0) 20 7946 0958", "EE"),
        ("+49 (0)30 123456", ""),
        ("+33 (0)6 12 34 56 78", ""),
        ("1-415-555-0133", "EE"),
        ("1-415-555-0133", "US"),
        ("011 44 20 7946 0958", "US"),
        ("5123 4567", "EE"),
        # National numbers that start with their own calling code, found by a review.
        ("9111500080", "IN"),
        ("(55) 99123-4567", "BR"),
        ("48 123 45 67", "PL"),
        ("390 859 0820", "IT"),
        ("278345727", "ZA"),
        ("4921 123456", "DE"),
        ("7 812 123 45 67", "RU"),
        ("78005553535", "RU"),
        ("375 801 123 45 67", "BY"),
        ("0 0 2 1234 5678", "AU"),
        ("06 06 1 234 5678", "HU"),
        ("00 49 30 123456", "BR"),
        ("00 44 20 7946 0958", "AU"),
        # `~` and digits at the end is an extension; `~` in 8~10 is not.
        ("+43 1 234567~8", ""),
        ("8~10 44 20 7946 0958", "RU"),
        ("+44 7911 123~456.", ""),
        ("+33 6~12345678", ""),
        ("06 12 34 56~78.", "FR"),
        # Whitespace other than spaces is not a number's.
        ("+372\t5123 4567", ""),
        ("+372\u20095123 4567", ""),
    ]:
        out.writerow([text, default] + verdict(text, default))


if __name__ == "__main__":
    main()
