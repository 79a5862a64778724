# Stand-in for debian:bookworm-slim (docker/prometheus.Dockerfile's base), built without a registry
# (see build-base-images.sh): the debootstrapped bookworm itself, at the point release the mirror
# serves (as the official tag moves with it), with the two settings Docker's slim images add, so
# packages installed on it leave no documentation, man pages or downloaded .deb files behind.
ARG BASE_IMAGE=txmon-offline/debian:bookworm
FROM ${BASE_IMAGE}

RUN printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
        'path-exclude /usr/share/man/*' 'path-exclude /usr/share/info/*' \
        'path-exclude /usr/share/locale/*' 'path-include /usr/share/locale/locale.alias' \
        >/etc/dpkg/dpkg.cfg.d/docker-slim \
    && printf '%s\n' 'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };' \
        'APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };' \
        'Dir::Cache::pkgcache ""; Dir::Cache::srcpkgcache "";' \
        >/etc/apt/apt.conf.d/docker-clean \
    && grep -q '^12\.' /etc/debian_version

CMD ["bash"]
