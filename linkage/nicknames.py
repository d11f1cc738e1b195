"""Common English given-name diminutives, mapped to one canonical form.

A compact table rather than a dependency: the PyPI nickname packages are unmaintained or pull in
large corpora. Agencies can extend it through the model's ``nicknames`` field.
"""

from __future__ import annotations

_GROUPS = """
alexander alex alec sandy xander lex
alexandra alex alexa sandra sasha lexie
andrew andy drew
anthony tony ant
barbara barb babs
benjamin ben benny benji
catherine cathy cath kate katie kat kathy
katherine kathy kate katie kat kath kitty
charles charlie chas chuck chaz
charlotte charlie lottie lotte
christopher chris kit topher
christine chris chrissie tina
daniel dan danny
david dave davy davie
deborah debbie deb debs
dorothy dot dottie
edward ed eddie ted teddy ned
elizabeth liz lizzie beth betty bess libby eliza lisa
ellen ellie nell
eleanor ellie nell nora
emily em emmy millie
frederick fred freddie
gabriel gabe
gregory greg
harold harry hal
henry harry hank hal
isabella bella izzy isabel
isabel bella izzy
jacob jake
james jim jimmy jamie jas
jennifer jen jenny
john jack johnny jon
jonathan jon jonny nathan
joseph joe joey
joshua josh
judith judy jude
kenneth ken kenny
lawrence larry laurie
leonard len lenny leo
margaret maggie meg peggy marge madge greta
matthew matt matty
michael mike mick mickey mikey
nathaniel nate nat nathan
nicholas nick nicky
olivia liv livvy
patricia pat patty trish tricia
patrick pat paddy
peter pete
philip phil pip
rebecca becky becca
richard rich rick ricky dick
robert rob robbie bob bobby bert
ronald ron ronnie
samuel sam sammy
samantha sam sammie
stephen steve stevie
steven steve stevie
susan sue susie suzy
theodore theo ted teddy
thomas tom tommy
timothy tim timmy
victoria vicky tori
william will bill billy liam willie
zachary zach zack
abigail abby abi
amelia millie amy
annabel annie bella
anne annie
caroline carrie caro
jessica jess jessie
joanna jo jojo
josephine josie jo
louise lou lulu
lucinda lucy cindy
madeline maddie maddy
natalie nat
penelope penny
rosemary rose rosie
sarah sally sadie
stephanie steph stevie
valerie val
"""


def _build() -> dict[str, str]:
    table: dict[str, str] = {}
    for line in _GROUPS.strip().splitlines():
        canonical, *variants = line.split()
        table.setdefault(canonical, canonical)
        for variant in variants:
            table.setdefault(variant, canonical)
    return table


NICKNAMES: dict[str, str] = _build()


def canonical_given_name(name: str) -> str:
    """The formal name a diminutive stands for (itself when unknown)."""
    return NICKNAMES.get(name, name)
