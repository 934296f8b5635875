"""Images as the model's vision processor takes them: RGB, sized in whole tiles within the pixel
limits, as qwen-omni-utils prepares them."""

from __future__ import annotations

import math
import os

from media.limits import DEFAULT_LIMITS, MediaError, MediaLimits, check_file
from messages import Message

# qwen-omni-utils sizes pictures in multiples of 28 pixels (its default patch 14 x merge 2); the processor
# then rounds them to its own 32.
SIZE_FACTOR = 28
MAX_ASPECT_RATIO = 200
"""The vision processor refuses images more elongated than this (qwen-omni-utils does the same)."""


def load_image(path: str | os.PathLike, limits: MediaLimits = DEFAULT_LIMITS):
    """An RGB ``PIL.Image`` sized as qwen-omni-utils sizes it: sides in multiples of 28 pixels, the
    area within ``limits.min_image_pixels``..``max_image_pixels``, the aspect ratio kept."""
    from PIL import Image, UnidentifiedImageError

    check_file(path, limits)
    try:
        with Image.open(path) as img:
            height, width = smart_resize(img.height, img.width, limits.min_image_pixels, limits.max_image_pixels)
            img.draft("RGB", (width, height))  # JPEG: decode at reduced size when huge
            image = _to_rgb(img)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as err:
        raise MediaError(path, Message("media.unreadable_image", {"reason": err.__class__.__name__})) from err
    padded = _within_aspect_ratio(image, limits)
    if padded is not image:  # a canvas of other proportions: sized anew
        image = padded
        height, width = smart_resize(image.height, image.width, limits.min_image_pixels, limits.max_image_pixels)
    return image if image.size == (width, height) else image.resize((width, height))


def smart_resize(height: int, width: int, min_pixels: float, max_pixels: float,
                 factor: int = SIZE_FACTOR) -> tuple[int, int]:
    """Sides in multiples of ``factor``, area within [min_pixels, max_pixels], aspect ratio kept
    (the rule of qwen-omni-utils and of the Qwen2-VL processors)."""
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def _within_aspect_ratio(image, limits: MediaLimits):
    """A strip too elongated for the processor (a banner, a one-pixel line) is centred on a white
    canvas just wide enough; a very long one is first shrunk so the canvas stays in the pixel budget."""
    from PIL import Image

    long_side, short_side = max(image.size), min(image.size)
    if long_side <= short_side * MAX_ASPECT_RATIO:
        return image
    longest = int((MAX_ASPECT_RATIO * 0.95 * limits.max_image_pixels) ** 0.5) - SIZE_FACTOR
    if long_side > longest:
        scale = longest / long_side
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))
        long_side = max(image.size)
    # Sides are rounded to multiples of SIZE_FACTOR afterwards: aim a little under the limit, in whole tiles.
    short_side = math.ceil(long_side / (MAX_ASPECT_RATIO * 0.95) / SIZE_FACTOR) * SIZE_FACTOR
    size = (image.width, max(image.height, short_side)) if image.width >= image.height else \
        (max(image.width, short_side), image.height)
    canvas = Image.new("RGB", size, (255, 255, 255))
    canvas.paste(image, ((size[0] - image.width) // 2, (size[1] - image.height) // 2))
    return canvas


def _to_rgb(image):
    """RGB, a transparent background turned white (as qwen-omni-utils does), not black."""
    from PIL import Image

    if image.mode != "RGBA":
        return image.convert("RGB")
    background = Image.new("RGB", image.size, (255, 255, 255))
    background.paste(image, mask=image.split()[3])
    return background
