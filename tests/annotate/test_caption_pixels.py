"""The weight-free captioner: entities, colours and motion computed from the request's pixels and boxes."""

import numpy as np

from instvl.annotate.caption import PixelCaptioner, parse_entities
from instvl.annotate.caption.pixels import describe_path, instance_colour
from instvl.annotate.caption.request import InstanceInfo
from instvl.datasets.synth.render import sprite


def _clip(num_frames=6, size=80):
    """A green circle moving right over grey, a still purple square (dotted) at the bottom."""
    frames, boxes = [], []
    circle, circle_px = sprite("circle", "green", "plain", 20)
    square, square_px = sprite("square", "purple", "dotted", 18)
    for t in range(num_frames):
        frame = np.full((size, size, 3), 120, np.uint8)
        x = 5 + 8 * t
        frame[10:30, x:x + 20][circle] = circle_px[circle]
        frame[55:73, 30:48][square] = square_px[square]
        frames.append(frame)
        boxes.append((x / size, 10 / size, (x + 20) / size, 30 / size))
    return frames, boxes, (30 / size, 55 / size, 48 / size, 73 / size)


def test_entities_are_the_coloured_shapes_in_the_pixels():
    frames, _, _ = _clip()
    captioner = PixelCaptioner.Config().build()
    (answer,) = captioner.caption([captioner.request("entities", frames)])
    caption, entities = parse_entities(answer)
    assert sorted(entities) == ["green circle", "purple square"]
    assert caption.startswith("A video of a ") and "grey background" in caption


def test_instance_caption_names_pixel_colour_and_motion():
    frames, boxes, square_box = _clip()
    captioner = PixelCaptioner.Config().build()
    # The phrase says "object": the colour must come from the instance's own pixels.
    moving = InstanceInfo(0, "object", list(boxes))
    still = InstanceInfo(1, "square", [square_box] * len(frames))
    texts = captioner.caption([captioner.request("instance", frames, instance=moving, others=[still]),
                               captioner.request("instance", frames, instance=still, others=[moving])])
    assert "green object moving right" in texts[0] and "above the square" in texts[0]
    assert "purple square staying still" in texts[1]
    assert instance_colour(frames, moving) == "green"


def test_describe_path_names_back_and_forth():
    there_and_back = np.array([[0.1, 0.1, 0.2, 0.2], [0.3, 0.1, 0.4, 0.2], [0.5, 0.1, 0.6, 0.2],
                               [0.3, 0.1, 0.4, 0.2], [0.1, 0.1, 0.2, 0.2]])
    assert describe_path(there_and_back) == "moving right and back"
    assert describe_path(there_and_back[:3]) == "moving right"
    assert describe_path(there_and_back[:1]) == "staying still"
    diagonal = np.array([[0.5, 0.5, 0.6, 0.6], [0.3, 0.3, 0.4, 0.4]])
    assert describe_path(diagonal) == "moving left and up"
