#!/bin/sh
# certbot deploy hook for ktlswsgi: install the renewed certificate and key
# where the unprivileged service can read them, then reload the service
# (HUP: the server re-reads certificate and key; on a bad pair it logs an
# error and keeps serving with the old one).
#
# Install: install -m 0755 certbot-deploy-hook.sh \
#              /etc/letsencrypt/renewal-hooks/deploy/ktlswsgi
# certbot runs it after each successful renewal with RENEWED_LINEAGE set
# (e.g. /etc/letsencrypt/live/example.com).  To install the current
# certificate once by hand:
#   RENEWED_LINEAGE=/etc/letsencrypt/live/example.com /etc/letsencrypt/renewal-hooks/deploy/ktlswsgi
set -eu

: "${RENEWED_LINEAGE:?set by certbot: the live/DOMAIN directory}"
dest=${KTLSWSGI_TLS_DIR:-/etc/ktlswsgi/tls}
group=${KTLSWSGI_GROUP:-ktlswsgi}
unit=${KTLSWSGI_UNIT:-ktlswsgi.service}

install -d -m 0750 -o root -g "$group" "$dest"
# New files first, then two renames in the same directory, then one reload:
# the server never reads a half-written file.
install -m 0640 -o root -g "$group" "$RENEWED_LINEAGE/fullchain.pem" "$dest/.fullchain.pem.new"
install -m 0640 -o root -g "$group" "$RENEWED_LINEAGE/privkey.pem" "$dest/.privkey.pem.new"
mv -f "$dest/.fullchain.pem.new" "$dest/fullchain.pem"
mv -f "$dest/.privkey.pem.new" "$dest/privkey.pem"

if systemctl is-active --quiet "$unit"; then
    systemctl reload "$unit"
fi
