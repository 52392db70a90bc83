"""Regenerate the bundled example images (all synthetic, made here with Pillow).

    python examples/make_examples.py

known/     the "hash list" an investigator starts from: a fake-ID-style card, a chat
           screenshot, a price-list poster and a photo.
reposts/   what turns up later: re-encoded, resized, mirrored, bordered, captioned copies,
           plus one unrelated image (which must not match).
"""
from __future__ import annotations

import os
import random

from PIL import Image, ImageDraw, ImageFilter, ImageFont, ImageOps

HERE = os.path.dirname(os.path.abspath(__file__))


def font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def synthetic_photo(seed: int, size=(640, 480)) -> Image.Image:
    """A photo-like scene: sky gradient, hills, sun, texture noise."""
    rng = random.Random(seed)
    w, h = size
    img = Image.new("RGB", size)
    draw = ImageDraw.Draw(img)
    top, bottom = (rng.randint(40, 120), rng.randint(90, 170), 230), (240, 200, rng.randint(120, 200))
    for y in range(h):
        t = y / h
        draw.line([(0, y), (w, y)], fill=tuple(int(a + (b - a) * t) for a, b in zip(top, bottom)))
    sun = (rng.randint(60, w - 60), rng.randint(40, h // 3))
    draw.ellipse([sun[0] - 35, sun[1] - 35, sun[0] + 35, sun[1] + 35], fill=(255, 230, 120))
    for layer in range(3):
        base = h * (0.55 + 0.13 * layer)
        points = [(0, h)]
        for x in range(0, w + 40, 40):
            points.append((x, base + rng.randint(-45, 25)))
        points.append((w, h))
        shade = 90 - layer * 25
        draw.polygon(points, fill=(shade // 2, shade + rng.randint(0, 40), shade // 3))
    noise = Image.effect_noise(size, 18).convert("RGB")
    return Image.blend(img, noise, 0.08).filter(ImageFilter.SMOOTH)


def id_card(name: str, number: str, seed: int) -> Image.Image:
    card = Image.new("RGB", (640, 400), (226, 236, 246))
    draw = ImageDraw.Draw(card)
    draw.rectangle([0, 0, 640, 70], fill=(30, 70, 140))
    draw.text((20, 18), "REPUBLIC OF EXAMPLE  -  IDENTITY CARD", font=font(26), fill="white")
    portrait = synthetic_photo(seed, (170, 220))
    card.paste(portrait, (24, 100))
    rows = [("Surname", name.split()[-1]), ("Given names", name.split()[0]),
            ("Date of birth", "01.01.1990"), ("Nationality", "EXAMPLE"), ("Document no.", number)]
    for i, (label, value) in enumerate(rows):
        draw.text((220, 100 + i * 52), label, font=font(16), fill=(90, 90, 110))
        draw.text((220, 120 + i * 52), value, font=font(24), fill=(10, 10, 30))
    draw.text((20, 350), f"IDEXA{number}<<<{name.upper().replace(' ', '<')}<<<<<<", font=font(20),
              fill=(40, 40, 40))
    return card


def chat_screenshot() -> Image.Image:
    shot = Image.new("RGB", (540, 960), (236, 229, 221))
    draw = ImageDraw.Draw(shot)
    draw.rectangle([0, 0, 540, 90], fill=(7, 94, 84))
    draw.text((90, 30), "Travel Agent", font=font(30), fill="white")
    messages = [
        (False, "Hello brother, safe trip to Europe?"),
        (True, "Yes 100% safe, boat leaves Friday"),
        (True, "Price 2500 all included, papers too"),
        (False, "My cousin arrived last week thanks!!"),
        (True, "Send photo of passport to this number"),
        (False, "ok I will pay half now"),
    ]
    y = 120
    for mine, text in messages:
        width = 30 + int(draw.textlength(text, font=font(22)))
        x0 = 540 - width - 20 if mine else 20
        draw.rounded_rectangle([x0, y, x0 + width, y + 60], 12,
                               fill=(220, 248, 198) if mine else (255, 255, 255))
        draw.text((x0 + 15, y + 17), text, font=font(22), fill=(20, 20, 20))
        y += 90
    shot.paste(synthetic_photo(7, (300, 200)), (220, y))
    return shot


def price_poster() -> Image.Image:
    poster = Image.new("RGB", (600, 800), (250, 210, 40))
    draw = ImageDraw.Draw(poster)
    draw.rectangle([0, 0, 600, 140], fill=(200, 20, 30))
    draw.text((40, 40), "EUROPE  TRIPS  2024", font=font(52), fill="white")
    poster.paste(synthetic_photo(11, (520, 260)), (40, 170))
    routes = [("Route A  ->  Italy", "2000 EUR"), ("Route B  ->  Greece", "1500 EUR"),
              ("Route C  ->  Spain", "3000 EUR"), ("Documents", "800 EUR")]
    for i, (route, price) in enumerate(routes):
        draw.text((40, 460 + i * 60), route, font=font(32), fill=(20, 20, 20))
        draw.text((420, 460 + i * 60), price, font=font(32), fill=(160, 0, 0))
    draw.text((40, 720), "WhatsApp +00 123 456 789", font=font(36), fill=(20, 20, 120))
    return poster


def with_border(img: Image.Image, px: int, colour) -> Image.Image:
    return ImageOps.expand(img, border=px, fill=colour)


def with_caption(img: Image.Image, text: str) -> Image.Image:
    bar = 70
    out = Image.new("RGB", (img.width, img.height + 2 * bar), "white")
    out.paste(img, (0, bar))
    draw = ImageDraw.Draw(out)
    draw.text((20, 18), text, font=font(34), fill="black")
    draw.text((20, img.height + bar + 18), "share before they delete", font=font(30), fill="black")
    return out


def main() -> None:
    known_dir = os.path.join(HERE, "known")
    repost_dir = os.path.join(HERE, "reposts")
    os.makedirs(known_dir, exist_ok=True)
    os.makedirs(repost_dir, exist_ok=True)

    card = id_card("Amina Example", "X1234567", seed=3)
    chat = chat_screenshot()
    poster = price_poster()
    photo = synthetic_photo(42)
    card.save(os.path.join(known_dir, "id-card.png"))
    chat.save(os.path.join(known_dir, "chat-testimonial.png"))
    poster.save(os.path.join(known_dir, "price-poster.jpg"), quality=92)
    photo.save(os.path.join(known_dir, "boat-photo.jpg"), quality=92)

    card.resize((480, 300), Image.Resampling.BICUBIC).save(
        os.path.join(repost_dir, "id-card-resized.jpg"), quality=70)
    ImageOps.mirror(photo).save(os.path.join(repost_dir, "boat-photo-mirrored.jpg"), quality=80)
    with_border(poster, 40, "black").save(os.path.join(repost_dir, "poster-black-border.jpg"),
                                          quality=75)
    chat.convert("RGB").save(os.path.join(repost_dir, "chat-recompressed.jpg"), quality=55)
    photo.rotate(90, expand=True).save(os.path.join(repost_dir, "boat-photo-rotated.jpg"),
                                       quality=85)
    with_caption(poster, "NEW PRICES!!").save(os.path.join(repost_dir, "poster-meme.jpg"),
                                              quality=80)
    # Same template, different person: a hard negative. With no other card of this design in
    # the database it was, before the verification stage, the known card's clear best match
    # at distance ~40 (now: "same template, not a copy", listed only with --templates), above
    # the 31 a whole-image match needs.
    id_card("Omar Sample", "Z7654321", seed=9).save(
        os.path.join(repost_dir, "other-id-card.jpg"), quality=85)
    synthetic_photo(1234).save(os.path.join(repost_dir, "unrelated-photo.jpg"), quality=85)


if __name__ == "__main__":
    main()
