#!/usr/bin/env bash
# Debian packages the test suite uses: GStreamer with its Python bindings' build
# dependencies (the gst:/csi: sources through PyGObject) and systemd-analyze (the
# deploy unit is verified with it), espeak-ng and sox (synthetic speech for the keyword
# spotting and speech tests), libportaudio2 (the microphone source's PortAudio),
# chromium with chromium-driver (the live view's page is tested in headless Chromium
# through Selenium) and mosquitto (the MQTT broker the MQTT tests start on loopback).
# Installs only what is missing; needs root for that.
set -euo pipefail
packages=(
  libgirepository1.0-dev libcairo2-dev pkg-config
  gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good
  gir1.2-gstreamer-1.0 gir1.2-gst-plugins-base-1.0
  systemd
  espeak-ng sox libportaudio2
  chromium chromium-driver
  mosquitto
)
missing=()
for package in "${packages[@]}"; do
  dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "missing Debian packages: ${missing[*]} (run: sudo apt-get install ${missing[*]})" >&2
  exit 1
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
