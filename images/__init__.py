"""Palisade's container images, built without a Docker daemon and reproducibly.

``python -m images.build`` (or ``scripts/build-images``) bootstraps a Debian base,
installs images/requirements.lock and the project's wheel as layers, and writes OCI
layout tarballs for ``ctr images import``. Modules: ``definition`` (what the images
are), ``rootfs`` (the Debian base, chroot), ``pylayers`` (the Python layers),
``oci`` (the deterministic OCI writer), ``smoke`` (runs the built image's rootfs),
``build`` (the command line). See docs/images.md.
"""
