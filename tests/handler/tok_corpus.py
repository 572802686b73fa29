"""Deterministic text corpus for tokenizer parity tests (unicode, emoji, HTML, whitespace, long text)."""

from __future__ import annotations

import random

_WORDS_TEXT = (
    "a photo of the cat dog sitting on mat red blue car street night city beach sunset mountain "
    "portrait close-up painting sketch diagram of two three people running jumping flying bird's eye view "
    "don't it's they're we've I'm you'll he'd rock'n'roll O'Neil xylophone antidisestablishmentarianism "
    "supercalifragilisticexpialidocious pneumonoultramicroscopicsilicovolcanoconiosis COVID-19 iPhone "
    "JPEG e-mail U.S.A. Mr. Dr. St. 3D 4K HDR 1080p 24/7 50% $100 #hashtag @user C++ C# .NET foo_bar "
    "snake_case camelCase PascalCase kebab-case SCREAMING_CASE"
)
WORDS = _WORDS_TEXT.split()

UNICODE = [
    "café",
    "naïve",
    "résumé",
    "coöperate",
    "São Paulo",
    "Zürich",
    "Ångström",
    "Øresund",
    "façade",
    "e\u0301",
    "a\u0308",
    "n\u0303o",
    "Z\u0335\u0321a\u0336l\u0337g\u0338o",
    "ﬁ ligature",
    "Ⅻ",
    "①②③",
    "東京タワー",
    "日本語のテキスト",
    "中文字符",
    "한국어",
    "ไทย",
    "हिन्दी",
    "বাংলা",
    "Ελληνικά",
    "русский текст",
    "עברית",
    "العربية",
    "فارسی",
    "\u202eRTL override\u202c",
    "\u200fmark\u200e",
    "ｆｕｌｌｗｉｄｔｈ",
    "ﾊﾝｶｸ",
    "𝔣𝔯𝔞𝔨𝔱𝔲𝔯",
    "𝐛𝐨𝐥𝐝",
    "Ⓐⓑⓒ",
    "ǅ",
    "ß",
    "ẞ",
    "İstanbul",
    "ıi",
    "ǰ",
    "ﬃ",
    "Σίσυφος",
    "ŉ",
    "ÃƒÂ©",
    "Ã©tÃ©",
    "â€œquotedâ€\x9d",
    "Ð¿Ñ€Ð¸Ð²ÐµÑ‚",  # mojibake that ftfy repairs
    "\ufeffBOM",
    "soft\u00adhyphen",
    "zero\u200bwidth",
    "\u2060joiner",
    "\x00nul",
    "\x1bescape",
    "\x7fdel",
    "\ufffd",
    "\U000e0041tag",
    "\U0010fffd",
    "\uf8ff",
]

EMOJI = [
    "😀",
    "👍🏽",
    "👍🏿",
    "👩‍💻",
    "👨‍👩‍👧‍👦",
    "🏳️‍🌈",
    "🏴‍☠️",
    "❤️",
    "❤",
    "🇺🇸",
    "🇯🇵🇫🇷",
    "🧑🏻‍🤝‍🧑🏿",
    "🐈‍⬛",
    "1️⃣",
    "#️⃣",
    "©️",
    "™",
    "🤷‍♀️",
    "🙋🏾‍♂️",
    "😂😂😂",
    "🔥🔥",
    "✨",
    "🫠",
    "🦄",
    "\U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f",
]

HTML = [
    "&amp;",
    "&#39;",
    "&nbsp;",
    "&amp;lt;",
    "&amp;amp;amp;",
    "&lt;b&gt;bold&lt;/b&gt;",
    "&quot;hi&quot;",
    "&#x1F600;",
    "&#128512;",
    "&copy;",
    "&eacute;",
    "&notanentity;",
    "&#0;",
    "&#xD800;",
    "&#1114112;",
    "<b>tag</b>",
    "<script>alert(1)</script>",
    "a &amp b",
    "AT&T",
    "&amp;#39;",
    "&#38;#39;",
    "&ampx",
]

PUNCT = [
    "!!!",
    "???",
    "...",
    "—",
    "–",
    "--",
    "-->",
    "<--",
    "''",
    '""',
    "``",
    "'s",
    "'S",
    "'T",
    "'RE",
    "'ll",
    "'",
    "’s",
    "‘quoted’",
    "“double”",
    "«guillemets»",
    "„low“",
    "()",
    "[]{}",
    "<>",
    "/\\",
    "|||",
    "~~~",
    "***",
    "___",
    "@#$%^&*",
    ";:",
    ",.",
    "¿¡",
    "…",
    "·",
    "•",
    "§¶",
    "°C",
    "±",
    "×÷",
    "≠≤≥",
    "∞",
    "√π",
    "<start_of_text>",
    "<end_of_text>",
    "<START_OF_TEXT>",
    "<|endoftext|>",
    "</w>",
    "Ġ",
]

SPACES = [
    " ",
    "  ",
    "\t",
    "\n",
    "\r\n",
    "\u00a0",
    "\u2028",
    "\u2029",
    "\u3000",
    "\u2003",
    "\u200b",
    "\x0b",
    "\x0c",
    "\x85",
    " " * 17,
    "\t \n \u00a0 ",
]

NUMBERS = [
    "0",
    "7",
    "42",
    "3.14159",
    "1,000,000",
    "1e10",
    "-273.15",
    "2024-01-31",
    "12:30",
    "٣",
    "४२",
    "½",
    "²",
    "³",
    "⁴",
    "₁₂",
    "Ⅳ",
    "一二三",
    "0x1F",
    "1st",
    "2nd",
    "3rd",
    "100km/h",
]


def _piece(rng: random.Random) -> str:
    pools = (WORDS, WORDS, WORDS, UNICODE, EMOJI, HTML, PUNCT, NUMBERS)
    tok = rng.choice(rng.choice(pools))
    r = rng.random()
    if r < 0.15:
        tok = tok.upper()
    elif r < 0.25:
        tok = tok.title()
    elif r < 0.3:
        tok = "".join(c.upper() if rng.random() < 0.5 else c for c in tok)
    return tok


def _sentence(rng: random.Random, n: int) -> str:
    out = []
    for _ in range(n):
        out.append(_piece(rng))
        out.append(rng.choice(SPACES) if rng.random() < 0.2 else ("" if rng.random() < 0.15 else " "))
    return "".join(out)


def _random_chars(rng: random.Random, n: int) -> str:
    ranges = [
        (0x20, 0x7E),
        (0xA0, 0x24F),
        (0x300, 0x36F),
        (0x370, 0x3FF),
        (0x400, 0x4FF),
        (0x590, 0x6FF),
        (0x900, 0x97F),
        (0x2000, 0x206F),
        (0x3040, 0x30FF),
        (0x4E00, 0x4FFF),
        (0xAC00, 0xAD00),
        (0xFE00, 0xFE0F),
        (0xFF00, 0xFFEF),
        (0x1F300, 0x1F6FF),
        (0x1F900, 0x1F9FF),
        (0x0, 0x1F),
    ]
    chars = []
    for _ in range(n):
        lo, hi = rng.choice(ranges)
        chars.append(chr(rng.randint(lo, hi)))
    return "".join(chars)


def corpus(n: int = 10_500, seed: int = 1234) -> list[str]:
    """Fixed hand-picked edge cases followed by seeded random mixtures; ``len(result) >= n``."""
    rng = random.Random(seed)
    fixed = [
        "",
        " ",
        "   ",
        "\t\n",
        "\u00a0",
        "a",
        "A",
        "I",
        "ab",
        "a photo of a cat",
        "A PHOTO OF A CAT",
        "It's a dog's life; they're here, we've got 'em, I'm sure you'll see, he'd go",
        "IT'S THEY'RE",
        "don't won't can't shan't",
        "ok" * 200,
        "word " * 100,
        "😀" * 100,
        "&amp;lt;script&amp;gt;",
        "&nbsp;&nbsp;x&nbsp;",
        "a\u2028b\u2029c",
        "a\tb\tc",
        "e\u0301\u0301\u0301",
        "supercalifragilisticexpialidocious " * 20,
        "1234567890" * 20,
        "...!!!???" * 30,
        "<start_of_text>",
        "<end_of_text>",
        "<start_of_text>a photo<end_of_text>",
        "x" * 1000,
        " ".join(WORDS),
        " ".join(UNICODE),
        "".join(EMOJI),
        " ".join(HTML),
        "".join(PUNCT),
        " ".join(NUMBERS),
    ]
    out = list(fixed)
    out += UNICODE + EMOJI + HTML + PUNCT + SPACES + NUMBERS + WORDS
    while len(out) < n:
        r = rng.random()
        if r < 0.6:
            out.append(_sentence(rng, rng.randint(1, 12)))
        elif r < 0.75:
            out.append(_random_chars(rng, rng.randint(1, 40)))
        elif r < 0.85:
            out.append(_sentence(rng, rng.randint(40, 120)))  # often > 77 tokens
        else:
            out.append(rng.choice(SPACES).join(_piece(rng) for _ in range(rng.randint(1, 6))))
    return out
