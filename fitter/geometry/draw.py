"""Drawing on images (landmarks, crosses, captions) for previews and overlays. Images are RGB uint8."""
import numpy as np

_SHIFT = 4  # sub-pixel precision bits for cv2 drawing


def _fixed(p):
    # OpenCV pixel centres are integers: no half-pixel shift needed
    return tuple(int(round(c * (1 << _SHIFT))) for c in p)


def draw_points(image, points, color=(0, 255, 0), radius=2.0, filled=True, visible=None):
    """Draw (K, 2) pixel points; where `visible` is False draw a hollow circle instead."""
    import cv2

    img = np.ascontiguousarray(image).copy()
    r = int(round(radius * (1 << _SHIFT)))
    for i, p in enumerate(np.asarray(points, float)):
        if not np.isfinite(p).all():
            continue
        fill = filled and (visible is None or visible[i])
        cv2.circle(img, _fixed(p), r, color, -1 if fill else 1, cv2.LINE_AA, _SHIFT)
    return img


def draw_crosses(image, points, color=(255, 40, 40), size=4.0, thickness=1):
    import cv2

    img = np.ascontiguousarray(image).copy()
    for p in np.asarray(points, float):
        if not np.isfinite(p).all():
            continue
        for dx, dy in ((1, 1), (1, -1)):
            a = _fixed((p[0] - dx * size, p[1] - dy * size))
            b = _fixed((p[0] + dx * size, p[1] + dy * size))
            cv2.line(img, a, b, color, thickness, cv2.LINE_AA, _SHIFT)
    return img


def draw_text(image, lines, origin=(8, 20), color=(255, 255, 255), scale=0.5):
    import cv2

    img = np.ascontiguousarray(image).copy()
    x, y = origin
    for line in lines:
        cv2.putText(img, line, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(img, line, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, color, 1, cv2.LINE_AA)
        y += int(22 * scale / 0.5)
    return img


def contact_sheet(tiles, columns=6, gap=4):
    """Tiles (s, s, 3) uint8 in rows of `columns` on a dark background."""
    s = tiles[0].shape[0]
    cols = min(columns, len(tiles))
    rows = -(-len(tiles) // cols)
    sheet = np.full((rows * (s + gap) + gap, cols * (s + gap) + gap, 3), 24, np.uint8)
    for k, t in enumerate(tiles):
        y, x = gap + (k // cols) * (s + gap), gap + (k % cols) * (s + gap)
        sheet[y:y + s, x:x + s] = t
    return sheet
