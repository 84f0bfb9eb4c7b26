"""The broad corpus's fixed package list and selection rules (``broad_corpus.py``).

Each :class:`Package` names a Debian 12 package at a pinned version, the
kind its images get by default, rules (globs on the path inside the package)
that give other kinds or exclude files, caps per format and an optional group
pattern; :data:`TEST_CORPUS_SOURCES` lists the files the test corpus was made
from, which are never taken. Changing anything here rebuilds that package on
the next run.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Smaller images are not benchmark material (1-pixel strips, 4x4 swatches).
MIN_SIDE = 8
KINDS = ("icon", "screenshot", "graphic", "photo")
CATEGORIES = ("icon", "screenshot", "graphic", "photo-png", "photo-jpeg", "graphic-jpeg",
              "webp", "gif")


def category(fmt: str, kind: str) -> str:
    """The category an image of ``fmt`` (PNG/JPEG/WEBP/GIF) and ``kind`` is reported under."""
    if fmt == "PNG":
        return "photo-png" if kind == "photo" else kind
    if fmt == "JPEG":
        return "photo-jpeg" if kind == "photo" else "graphic-jpeg"
    return fmt.lower()


@dataclass(frozen=True)
class Package:
    """One Debian package and how images are taken from it.

    ``rules``: ``(glob, kind)`` pairs matched against the path inside the
    package (``fnmatch``: ``*`` also crosses ``/``); the first match wins and
    kind ``None`` excludes the file. Unmatched files get ``kind`` (``None``:
    excluded). ``caps``: most images taken per format (``png``, ``jpeg``,
    ``webp``, ``gif``; absent = 0). ``group``: a regular expression; images
    whose paths give the same first group count once.
    """

    name: str
    version: str
    kind: str | None
    caps: dict[str, int]
    rules: tuple[tuple[str, str | None], ...] = ()
    group: str | None = None
    min_side: int = MIN_SIDE


def _p(name: str, version: str, kind: str | None, caps: dict[str, int],
       *rules: tuple[str, str | None], group: str | None = None, min_side: int = MIN_SIDE) -> Package:
    return Package(name, version, kind, caps, tuple(rules), group, min_side)


#: Where the test corpus came from (its MANIFEST.json ``source_files``): never
#: taken here, nor other resolutions of the same wallpaper. Globs on
#: ``package:path``.
TEST_CORPUS_SOURCES = (
    "mate-backgrounds:*/nature/Storm*", "mate-backgrounds:*/nature/Blinds*",
    "mate-backgrounds:*/nature/Garden*", "mate-backgrounds:*/nature/LadyBird*",
    "mate-backgrounds:*/nature/Dune*", "mate-backgrounds:*/desktop/Stripes.png",
    "mate-backgrounds:*/abstract/Flow.png",
    "plasma-workspace-wallpapers:*/wallpapers/Path/*",
    "plasma-workspace-wallpapers:*/wallpapers/EveningGlow/*",
    "plasma-workspace-wallpapers:*/wallpapers/FallenLeaf/*",
    "plasma-workspace-wallpapers:*/wallpapers/Grey/*",
    "plasma-workspace-wallpapers:*/wallpapers/ColorfulCups/*",
    "plasma-workspace-wallpapers:*/wallpapers/Kite/*",
    "lomiri-wallpapers-16.04:*/sunset_by_Aitzol_Berasategi.jpg",
    "lomiri-wallpapers-16.04:*/Bridge_by_Sander_Klootwijk.jpg",
    "lomiri-wallpapers-16.04:*/picosdeeuropa_by_Aitzol_Berasategi.jpg",
    "lomiri-wallpapers-16.04:*/friends_by_Aitzol_Berasategi.jpg",
    "lomiri-wallpapers-16.04:*/aitzgorri_by_Aitzol_Berasategi.jpg",
    "lomiri-wallpapers-16.04:*/Wine_by_Jakkub_Mede.jpg",
    "gnome-user-docs:*/figures/shell-appts.png", "gnome-user-docs:*/figures/screenshot-tool.png",
    "adwaita-icon-theme:*/512x512/places/folder-pictures.png",
    "adwaita-icon-theme:*/512x512/devices/printer.png",
    "tango-icon-theme:*/32x32/actions/document-save.png",
    "desktop-base:*/plymouth/themes/emerald/logo+emerald.png",
    "desktop-base:*/debian-logos/logo-256.png",
    "desktop-base:*/plymouth/themes/spacefun/earth*.png",
    "desktop-base:*/futureprototype-theme/grub/grub-4x3.png",
    "desktop-base:*/homeworld-theme/grub/grub-4x3.png",
    "sway-backgrounds:*/Sway_Wallpaper_Blue_2048x1536.png",
    "gnome-backgrounds:*/truchet-l.webp",
    "python3-skimage:*/skimage/data/astronaut.png", "python3-skimage:*/skimage/data/camera.png",
    "python3-skimage:*/skimage/data/coffee.png", "python3-skimage:*/skimage/data/rocket.jpg",
    "python-matplotlib-data:*/sample_data/grace_hopper.jpg",
)

_HELP = "*/doc/HTML/en/*"  # KDE manuals: the English screenshots; other languages repeat them
_OTHER_HELP = "*/doc/HTML/*"

#: The fixed package list (Debian 12 "bookworm" versions). Order matters only
#: for deduplication: an image found in an earlier package is not taken again.
PACKAGES: tuple[Package, ...] = (
    # --- icon themes: PNG icons at 8-512 px, RGBA, palette + tRNS, 16-bit, gray + alpha
    _p("adwaita-icon-theme", "43-1", "icon", {"png": 12}, ("*/cursors/*", None)),
    _p("gnome-icon-theme", "3.12.0-5", "icon", {"png": 14}),
    _p("tango-icon-theme", "0.8.90-11", "icon", {"png": 10}),
    _p("oxygen-icon-theme", "5:5.103.0-1", "icon", {"png": 16}),
    _p("mate-icon-theme", "1.26.0-1", "icon", {"png": 12}),
    _p("lxde-icon-theme", "0.5.1-2.1", "icon", {"png": 8}),
    _p("gimp-data", "2.10.34-1+deb12u10", "graphic", {"png": 8},
       ("*/icons/*", "icon"), ("*/themes/*", "graphic"), ("*/images/*", "graphic")),
    _p("rawtherapee-data", "5.9-1", "icon", {"png": 3}),
    # --- manuals: screenshots with text (RGB, RGBA, palette, ICC-tagged), some photos
    _p("gimp-help-en", "2.10.34-2", "screenshot", {"png": 36, "jpeg": 22},
       ("*/images/filters/examples/*.jpg", "photo"), ("*/images/filters/examples/*taj*", "photo"),
       ("*/images/filters/examples/*zinnias*", "photo"),
       ("*/images/filters/examples/*cosmos*", "photo"),
       ("*/images/filters/examples/*", "graphic"), ("*/images/tutorials/*.jpg", "photo"),
       ("*/images/using/*.jpg", "photo"), ("*/images/math/*", "graphic"),
       ("*/images/glossary/*", "graphic"), ("*.jpg", "photo"), min_side=48),
    _p("kicad-doc-en", "6.0.11+dfsg-1", "screenshot", {"png": 16}, min_side=64),
    _p("wireshark-doc", "4.0.17-0+deb12u3", "screenshot", {"png": 16}, min_side=64),
    _p("gnome-user-docs", "43.0-2", "screenshot", {"png": 14}, min_side=64),
    _p("kstars-data", "5:3.6.2-2", "graphic", {"png": 22, "jpeg": 2},
       (_HELP, "screenshot"), (_OTHER_HELP, None), ("*/textures/moon*", "photo"),
       ("*/textures/jupiter*", "photo"), ("*/textures/mars*", "photo"),
       ("*/textures/mercury*", "photo"), group=r"textures/(moon)\d+"),
    _p("kdenlive-data", "22.12.3-2+deb12u2", "graphic", {"png": 6},
       (_HELP, "screenshot"), (_OTHER_HELP, None), ("*/icons/*", "icon")),
    _p("kgeography-data", "4:22.12.3-1", "graphic", {"png": 8},
       (_HELP, "screenshot"), (_OTHER_HELP, None)),
    _p("hugin-data", "2022.0.0+dfsg-2", "graphic", {"png": 8, "jpeg": 10, "gif": 2},
       ("*/help_en_EN/*.jpg", "photo"), ("*/help_en_EN/*", "screenshot"),
       ("*/icons/*", "icon"), ("*/xrc/data/*", "icon"), min_side=16),
    _p("tuxpaint-data", "1:0.9.28-sdl2-1", "graphic", {"png": 8, "jpeg": 10},
       ("*/html/*", "screenshot"), ("*/templates/*", "photo")),
    _p("fotoxx-common", "20.08-2", "graphic", {"png": 6, "jpeg": 12},
       ("*/images/blur2.jpg", "photo"), ("*/images/sharp-comp.jpg", "photo"),
       ("*/images/*", "screenshot"), ("*/patterns/*", "graphic")),
    _p("imagemagick-6-doc", "8:6.9.11.60+dfsg-1.6+deb12u11", "graphic",
       {"png": 6, "jpeg": 6, "gif": 2}, ("*/bluebells*", "photo"), ("*/wizard*", "graphic"),
       ("*.jpg", "photo")),
    # --- wallpapers and artwork: huge PNGs (opaque RGBA, 8-15 MP renders), photos as PNG and JPEG
    _p("desktop-base", "12.0.6+nmu1~deb12u1", "graphic", {"png": 10, "jpeg": 3},
       ("*/icons/*", "icon"), ("*/login/*.jpg", "screenshot"), ("*/previews/*", "screenshot")),
    _p("sway-backgrounds", "1.7-6", "graphic", {"png": 4}),
    _p("plasma-workspace-wallpapers", "4:5.27.5-2", "graphic", {"png": 8, "jpeg": 10},
       ("*/contents/screenshot.*", None),
       ("*/wallpapers/BytheWater/*", "photo"), ("*/wallpapers/ColdRipple/*", "photo"),
       ("*/wallpapers/DarkestHour/*", "photo"), ("*/wallpapers/OneStandsOut/*", "photo"),
       ("*/wallpapers/Volna/*", "photo"), ("*/wallpapers/summer_1am/*", "photo"),
       group=r"wallpapers/([^/]+)/"),
    _p("mate-backgrounds", "1.26.0-1", "graphic", {"png": 8, "jpeg": 10},
       ("*/nature/*", "photo"), ("*/Ubuntu-Mate-*", "photo"),
       group=r"/([A-Za-z-]+?)(?:_\d+x\d+)?\.\w+$"),
    _p("ukui-wallpapers", "20.04.3-1.1", "graphic", {"png": 4, "jpeg": 3}),
    _p("lxqt-themes", "1.2.0-1", "graphic", {"png": 10, "jpeg": 5},
       *[(f"*/wallpapers/{n}", "photo") for n in (
           "Butterfly-Kenneth-Wimer.jpg", "Valendas.png", "after-the-rain.jpg", "appleflower.png",
           "beam.png", "butterfly.png", "cloud.png", "drop.png", "flowers.png", "fog.jpg",
           "this-is-not-windows.jpg")]),
    _p("lomiri-wallpapers-16.04", "20.04.0-2", "photo", {"jpeg": 9},
       ("*/Painting-Colors*", "graphic")),
    _p("lomiri-wallpapers-20.04", "20.04.0-2", "photo", {"jpeg": 4},
       ("*/Fossa_*", "graphic"), ("*/Painting-Colors*", "graphic")),
    _p("lomiri-wallpapers", "20.04.0-2", "graphic", {"png": 1}),
    _p("gnome-backgrounds", "43.1-1", "graphic", {"webp": 5}),
    # --- scientific sample data and test images
    _p("python3-skimage", "0.19.3-8", "graphic", {"png": 14, "jpeg": 3, "gif": 1},
       *[(f"*/skimage/data/{n}", "photo") for n in (
           "chelsea.png", "motorcycle_*.png", "brick.png", "grass.png", "gravel.png", "coins.png",
           "moon.png", "cell.png", "ihc.png", "microaneurysms.png", "page.png", "text.png",
           "hubble_deep_field.jpg", "retina.jpg", "lbp_frontal_face.jpg", "lily.*",
           "phantom.png")]),
    _p("python-matplotlib-data", "3.6.3-1", "graphic", {"png": 4}),
    _p("octave-doc", "7.3.0-2", "graphic", {"png": 6}),
    _p("xplanet-images", "1.3.1-3", "graphic", {"png": 2, "jpeg": 2},
       ("*/earth.jpg", "photo"), ("*/night.jpg", "photo")),
    _p("golang-1.19-src", "1.19.8-2", "graphic", {"png": 10, "jpeg": 8, "gif": 2},
       ("*/testdata/video-*", "photo")),
    _p("digikam-data", "4:7.9.0-1", "graphic", {"png": 8, "jpeg": 3, "gif": 2},
       ("*/icons/*", "icon"), ("*/about/images/*.jpg", "photo")),
    _p("scribus-data", "1.5.8+dfsg-4", "graphic", {"png": 6, "jpeg": 4},
       ("*/icons/*", "icon"), ("*.jpg", "photo"), ("*/templates/*/map.*", "graphic")),
    _p("krita-data", "1:5.1.5+dfsg-2+deb12u1", "graphic", {"png": 8}),
    _p("darktable", "4.2.1-4", "graphic", {"png": 3, "gif": 2}, ("*/icons/*", "icon")),
    # --- games: sprites (palette, RGBA, 16-bit), tiles, textures, level shots
    _p("frozen-bubble-data", "2.212-11", "graphic", {"png": 8, "gif": 3}),
    _p("pingus-data", "0.7.6-5.1", "graphic", {"png": 8, "jpeg": 5}),
    _p("teeworlds-data", "0.7.5-2", "graphic", {"png": 6}),
    _p("crawl-tiles-data", "2:0.28.0-1.1", "graphic", {"png": 5}),
    _p("freeciv-data", "3.0.6-1+deb12u1", "graphic", {"png": 8}, ("*/icons/*", "icon")),
    _p("chromium-bsu-data", "0.9.16.1-3", "graphic", {"png": 4, "jpeg": 2}),
    _p("neverball-data", "1.6.0+git20180603-3", "graphic", {"png": 3, "jpeg": 10}),
    _p("extremetuxracer-data", "0.8.2-1", "graphic", {"png": 14},
       ("*/env/*", "photo"), ("*/terrains/*", "photo")),
    _p("ri-li-data", "2.0.1+ds2-2", "graphic", {"png": 2}),
)
