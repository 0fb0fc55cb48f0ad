"""OpenCV pinhole camera: model -> camera by x_c = R x + t (mm), pixels u = K x_c / z.

x right, y down, z forward; pixel (0, 0) is the centre of the top-left pixel. The one place of intrinsic
algebra: projection, back-projected rays, the focal prior and the centred principal point, a camera with
another focal length, principal point or for a crop, the intrinsics' JSON form and the OpenGL projection
that renders through a camera. Euler angles and rotation vectors go through scipy's Rotation.
"""
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial.transform import Rotation

FOCAL_PRIOR_FACTOR = 1.4        # f0 = factor × max(W, H) when nothing better is known (≈ 50 mm lens)


@dataclass
class Camera:
    K: np.ndarray  # (3, 3) intrinsics in pixels
    R: np.ndarray = field(default_factory=lambda: np.eye(3))  # (3, 3) rotation model -> camera
    t: np.ndarray = field(default_factory=lambda: np.zeros(3))  # (3,) translation, mm
    width: int = 0
    height: int = 0

    def to_camera(self, X):
        """(N, 3) model points -> (N, 3) camera-frame points (mm)."""
        return np.asarray(X, float) @ self.R.T + self.t

    def project(self, X):
        """(N, 3) model points -> (N, 2) pixel coordinates (OpenCV convention)."""
        return self.pixels(self.to_camera(X))

    def pixels(self, Xc):
        """(N, 3) camera-frame points (mm) -> (N, 2) pixels, K Xc / z."""
        uvw = np.asarray(Xc, float) @ self.K.T
        return uvw[:, :2] / uvw[:, 2:3]

    @staticmethod
    def for_image(width, height, focal=None):
        """The camera of a width × height photo at the identity pose: square pixels, the principal point at
        the image centre, the focal length `focal` (px) or, when None, the prior (`focal_prior`)."""
        return Camera(intrinsics(focal_prior(width, height) if focal is None else float(focal), width, height),
                      width=int(width), height=int(height))

    @property
    def focal(self):
        """The focal length (px) along x, K[0, 0]."""
        return self.K[0, 0]

    @property
    def focal_xy(self):
        """(2,) the focal lengths (px) along x and y, (K[0, 0], K[1, 1])."""
        return np.array([self.K[0, 0], self.K[1, 1]])

    @property
    def aspect(self):
        """fy / fx (1 for square pixels)."""
        return self.K[1, 1] / self.K[0, 0]

    @property
    def principal_point(self):
        """(2,) the principal point (px)."""
        return np.array([self.K[0, 2], self.K[1, 2]])

    def rays(self, uv):
        """(..., 2) pixels -> (..., 3) camera-frame rays K⁻¹ [u, v, 1] (z = 1): a pixel's point at depth z
        is z × its ray."""
        uv = np.asarray(uv, float)
        return np.concatenate([uv, np.ones(uv.shape[:-1] + (1,))], -1) @ np.linalg.inv(self.K).T

    def image_rays(self, height=None, width=None):
        """(h, w, 3) the rays (`rays`) of every pixel centre of an h × w image (default: the camera's size)."""
        h, w = (self.height, self.width) if height is None else (height, width)
        u, v = np.meshgrid(np.arange(w, dtype=float), np.arange(h, dtype=float))
        return self.rays(np.stack([u, v], axis=-1))

    def ray_offsets(self, duv):
        """(N, 2) pixel offsets -> (N, 3) the differences of their rays, K⁻¹ [du, dv, 0]."""
        duv = np.asarray(duv, float)
        return np.column_stack([duv, np.zeros(len(duv))]) @ np.linalg.inv(self.K).T

    def with_focal(self, f):
        """The camera with focal length f (px; fy keeps the aspect fy/fx: equal to f for square pixels) whose
        depth is scaled with it, so that the model keeps its size in the image."""
        return self.refocused(f, self.R.copy(), self.t * np.array([1.0, 1.0, f / self.K[0, 0]]))

    def refocused(self, f, R=None, t=None):
        """The camera with focal length f (px; fy keeps the aspect fy/fx) and the pose kept, or R, t given;
        unlike `with_focal` nothing else moves (the model's image grows with f)."""
        K = self.K.copy()
        aspect = K[1, 1] / K[0, 0]
        K[0, 0], K[1, 1] = f, f * aspect
        return Camera(K, self.R if R is None else R, self.t if t is None else t, self.width, self.height)

    def with_principal_point(self, c):
        """The camera with its principal point at c (2,) px, all else kept."""
        K = self.K.copy()
        K[0, 2], K[1, 2] = c
        return Camera(K, self.R, self.t, self.width, self.height)

    def zoomed(self, scale, R=None, t=None):
        """The camera with both focal lengths × scale (the pose kept, or R, t given)."""
        K = self.K.copy()
        K[0, 0] *= scale
        K[1, 1] *= scale
        return Camera(K, self.R if R is None else R, self.t if t is None else t, self.width, self.height)

    def cropped(self, A, size):
        """The camera of a size×size crop whose pixels are A · this camera's pixels (fitter.geometry.camera.
        crop_matrix)."""
        return Camera(A @ self.K, self.R, self.t, size, size)

    def intrinsics_dict(self):
        """{"fx", "fy", "cx", "cy"} in pixels (the intrinsics JSON form; `pinhole_matrix` reads it back)."""
        return {"fx": float(self.K[0, 0]), "fy": float(self.K[1, 1]), "cx": float(self.K[0, 2]), "cy": float(self.K[1, 2])}

    def to_dict(self):
        return {"K": self.K.tolist(), "R": self.R.tolist(), "t": self.t.tolist(),
                "width": int(self.width), "height": int(self.height)}

    @staticmethod
    def from_dict(d):
        return Camera(np.asarray(d["K"], float), np.asarray(d["R"], float), np.asarray(d["t"], float),
                      int(d.get("width", 0)), int(d.get("height", 0)))


def crop_matrix(x0, y0, side, size):
    """3×3 A with crop pixel = A · image pixel for the square (x0, y0, side) of an image resampled to
    size×size (pixel centres: u′ + 0.5 = s (u − x0 + 0.5), s = size / side). The crop's camera has K′ = A K."""
    s = size / side
    return np.array([[s, 0, s * (0.5 - x0) - 0.5], [0, s, s * (0.5 - y0) - 0.5], [0, 0, 1.0]])


def crop_image(image, box, size):
    """The box (x0, y0, side) of `image` (H, W, 3) resampled to size×size (area-averaged when shrinking;
    outside the photo: edge pixels repeated) and the matrix A (3×3) with crop pixel = A · photo pixel."""
    import cv2

    x0, y0, side = box
    H, W = image.shape[:2]
    pad = max(0, -x0, -y0, x0 + side - W, y0 + side - H)
    src = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE) if pad else image
    patch = src[y0 + pad:y0 + pad + side, x0 + pad:x0 + pad + side]
    interp = cv2.INTER_AREA if size < side else cv2.INTER_LINEAR
    out = cv2.resize(patch, (size, size), interpolation=interp)
    return out, crop_matrix(x0, y0, side, size)


def square_box(points_2d, margin, whole_pixels=False):
    """(x0, y0, side): the square centred on the bounding box of 2D points (N, 2), its side the box's
    larger extent × (1 + 2 margin); with whole_pixels, integers (side rounded up, corner down). It may
    extend past the image."""
    points_2d = np.asarray(points_2d, float)
    lo, hi = points_2d.min(0), points_2d.max(0)
    side = float((hi - lo).max()) * (1 + 2 * margin)
    c = (lo + hi) / 2
    if whole_pixels:
        side = int(np.ceil(side))
        return int(np.floor(c[0] - side / 2)), int(np.floor(c[1] - side / 2)), side
    x0, y0 = c - side / 2
    return float(x0), float(y0), side


def perspective(Xc, focal_xy, principal_point):
    """(N, 3) camera-frame points -> (N, 2) pixels, f x / z + c, for focal lengths focal_xy (a number, or
    (2,) for fx, fy) and principal_point (2,) px: the pinhole of the model fits, which keep f and c as
    unknowns rather than a K matrix."""
    return focal_xy * Xc[:, :2] / Xc[:, 2:3] + principal_point


def pinhole_matrix(fx, fy, cx, cy):
    """K (3, 3) from focal lengths and principal point (px), no skew."""
    return np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]], float)


def opengl_projection(K, width, height, near, far):
    """4x4 matrix taking OpenCV camera points to clip space with image row 0 at framebuffer row 0.

    x_ndc = 2 (u + 0.5) / W - 1 and y_ndc = 2 (v + 0.5) / H - 1, so pixel centres land on texel
    centres; y is not flipped, which keeps numpy's row order when the framebuffer is read back.
    """
    fx, s, cx = K[0]
    fy, cy = K[1, 1], K[1, 2]
    P = np.zeros((4, 4))
    P[0, 0], P[0, 1], P[0, 2] = 2 * fx / width, 2 * s / width, 2 * (cx + 0.5) / width - 1
    P[1, 1], P[1, 2] = 2 * fy / height, 2 * (cy + 0.5) / height - 1
    P[2, 2], P[2, 3] = (far + near) / (far - near), -2 * far * near / (far - near)
    P[3, 2] = 1.0
    return P


def image_centre(width, height):
    """(2,) the centre of a width × height image in pixels, ((W-1)/2, (H-1)/2)."""
    return np.array([(width - 1) / 2.0, (height - 1) / 2.0])


def focal_prior(width, height):
    """The focal length (px) assumed for a width × height image when nothing better is known."""
    return FOCAL_PRIOR_FACTOR * max(width, height)


def intrinsics(focal_px, width, height):
    """K for square pixels with the principal point at the image centre ((W-1)/2, (H-1)/2)."""
    return np.array([[focal_px, 0, (width - 1) / 2.0], [0, focal_px, (height - 1) / 2.0], [0, 0, 1.0]])


def rotation_matrix(yaw_deg=0.0, pitch_deg=0.0, roll_deg=0.0):
    """Rotation applied to a model in its own frame (x right, y up, z towards the viewer, as ICT).

    Yaw turns about the model's vertical axis (positive: the nose moves towards +x, i.e. towards
    the right of the image), pitch about x (positive: the nose moves up), roll about z.
    """
    # R = Rz(roll) Rx(pitch) Ry(yaw): intrinsic Z-X-Y Euler angles
    return Rotation.from_euler("ZXY", [roll_deg, pitch_deg, yaw_deg], degrees=True).as_matrix()


# A y-up, z-towards-viewer model frame seen by an OpenCV camera looking along +z: flip y and z.
MODEL_TO_OPENCV = np.diag([1.0, -1.0, -1.0])


def look_at_face(center, yaw_deg, pitch_deg, distance_mm, focal_px, width, height, roll_deg=0.0):
    """Camera that sees a y-up model (e.g. ICT) turned by yaw/pitch, with `center` on the optical axis."""
    R = MODEL_TO_OPENCV @ rotation_matrix(yaw_deg, pitch_deg, roll_deg)
    t = np.array([0.0, 0.0, distance_mm]) - R @ np.asarray(center, float)
    return Camera(intrinsics(focal_px, width, height), R, t, width, height)


def angles_of_rotation(R):
    """(yaw, pitch, roll) degrees of an OpenCV model->camera rotation R of a y-up model, the inverse of
    R = MODEL_TO_OPENCV @ rotation_matrix(yaw, pitch, roll) (|pitch| < 90°)."""
    A = MODEL_TO_OPENCV.T @ np.asarray(R, float)  # = Rz(roll) Rx(pitch) Ry(yaw)
    roll, pitch, yaw = Rotation.from_matrix(A).as_euler("ZXY", degrees=True)
    return float(yaw), float(pitch), float(roll)


def yaw_of_rotation(R):
    """Yaw in degrees (as in rotation_matrix) of an OpenCV model->camera rotation of a y-up model."""
    fwd = (MODEL_TO_OPENCV.T @ np.asarray(R)) @ np.array([0.0, 0.0, 1.0])
    return float(np.degrees(np.arcsin(np.clip(fwd[0], -1.0, 1.0))))
