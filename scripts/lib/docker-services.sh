# shellcheck shell=bash
# scripts/lib/docker-services.sh: the Docker parts of the test bed (DESIGN.md
# §9, issue 3), sourced by scripts/test.
#
#   docker_services_install   apt-get install what is missing (no service left running)
#   docker_services_start     private dockerd + swarm, htpasswd registry, test image
#   docker_services_stop      stop and remove exactly what _start made (idempotent,
#                             safe from an EXIT trap, also after a half-done start)
#   docker_services_logs      tail of the dockerd and registry logs (for failures)
#
# DOCKER_SERVICES_STORAGE_DRIVER=vfs forces a storage driver (default: overlay2,
# then vfs if dockerd does not come up with it).
#
# Each function returns non-zero on failure (never `exit`s), so the caller
# decides between "skip loudly" and "fail" (CI=true). _start needs root.
#
# Exported by docker_services_start:
#   REGISTRY_TEST_DOCKER_HOST            unix:///tmp/registry-docker.XXXXXX/docker.sock
#   REGISTRY_TEST_DOCKER_API_VERSION     what the daemon speaks (1.41 on Debian 12)
#   REGISTRY_TEST_DOCKER_CLI             /usr/bin/docker (Debian's 20.10 CLI, matches the daemon)
#   REGISTRY_TEST_DOCKER_COMPOSE         /usr/bin/docker-compose (v1, Python)
#   REGISTRY_TEST_DOCKER_TLS_HOST        tcp://127.0.0.1:PORT, the same daemon with --tlsverify
#   REGISTRY_TEST_DOCKER_TLS_DIR         its client files: ca.pem, cert.pem, key.pem (as ~/.docker)
#   REGISTRY_TEST_DISTRIBUTION           127.0.0.1:PORT (plain http, htpasswd Basic auth)
#   REGISTRY_TEST_DISTRIBUTION_USER      user that can pull/push
#   REGISTRY_TEST_DISTRIBUTION_PASSWORD  its password
#   REGISTRY_TEST_DISTRIBUTION_HTPASSWD  the htpasswd file (bcrypt), re-read on change
#   REGISTRY_TEST_IMAGE                  127.0.0.1:PORT/test/busybox:1 (NOT on the engine)
#   REGISTRY_TEST_IMAGE_DIGEST           sha256:... manifest digest (RepoDigests after a pull)
#   REGISTRY_TEST_SWARM=1                only when the swarm is active and cleaned up
#
# ---------------------------------------------------------------------------
# Findings (measured on the `rust` kind, Debian 12, kernel 6.18, Firecracker
# VM, cgroup v1, as root, 2026-11-27):
#
# * Versions: docker.io 20.10.24+dfsg1 (dockerd and /usr/bin/docker), Engine
#   API 1.41 (minimum 1.12): a request to /v1.45/... gets 400 "client version
#   1.45 is too new. Maximum supported API version is 1.41" -> negotiate.
#   containerd 1.6.20~ds1, runc 1.1.5+ds1, docker-registry 2.8.2+ds1
#   (distribution v2), docker-compose 1.29.2 (v1, Python, /usr/bin/docker-compose,
#   docker-py 5.0.3; honours DOCKER_HOST=unix://...; NOT the `docker compose`
#   v2 plugin), busybox-static 1.35.0, apache2-utils 2.4 (htpasswd -B).
#   The machine also has /usr/local/bin/docker (CLI 28.x, first on PATH); it
#   negotiates down too, but we use Debian's /usr/bin/docker.
# * Install: 28-33 s with downloads. The postinsts of docker.io, containerd and
#   docker-registry call invoke-rc.d (no systemd here, PID 1 is not systemd);
#   a policy-rc.d that exits 101 stops them ("policy-rc.d denied execution of
#   start"): no dockerd/containerd/registry was left running.
# * dockerd: storage driver overlay2 works here (ext4 /tmp); vfs is the
#   fallback. It starts its own containerd under --exec-root. Ready in ~0.5 s.
#   Without --ip-forward=false it sets net.ipv4.ip_forward=1 on the host
#   (seen): we pass it. It writes /etc/docker/key.json unless given
#   deprecated-key-path (set in our own --config-file). Insecure registries
#   default to 127.0.0.0/8 (`docker info`), so plain http on 127.0.0.1 works
#   with no daemon option.
# * Pull failures through the Engine API are HTTP 500 (not 401): no auth ->
#   'Head "http://127.0.0.1:P/v2/test/busybox/manifests/1": no basic auth
#   credentials'; wrong password -> "unauthorized: authentication required".
# * Swarm: `swarm init --advertise-addr 127.0.0.1 --listen-addr 127.0.0.1:P`
#   works with --bridge=none --iptables=false (~0.6 s). Caveats:
#   - ~1-3 s after init the node's ingress attachment creates the
#     docker_gwbridge bridge (172.17.0.1/16) and, with the first task, an
#     ingress-sbox netns with a VXLAN socket on 0.0.0.0:4789. We remove the
#     ingress network and docker_gwbridge right after init; after that,
#     --network host services run and neither comes back (seen). So: no
#     published ports (no routing mesh), no overlay networks in tests.
#   - the gossip port 7946 (tcp+udp, bound on 127.0.0.1) is fixed in 20.10:
#     only one swarm-mode dockerd per machine at a time. If 7946 is taken we
#     leave swarm off (REGISTRY_TEST_SWARM unset) and say why.
#   - a swarm leaves an nsfs mount (exec-root/netns/default) after dockerd
#     exits: _stop unmounts everything under the temp dir before removing it.
#   - with no auth the task is Rejected: "No such image: 127.0.0.1:P/..."
#     (service ps); with --with-registry-auth it runs in ~1-2 s.
#   - the CLI pins the service image to its digest (repo@sha256:...), so the
#     image a swarm task pulls is on the engine UNTAGGED ("repo:<none>"):
#     a later compose `up` of repo:1 does not see it and tries to pull.
#   - nextest runs tests in parallel against this one engine: unique service,
#     container and compose project names per test.
# * Compose v1: `DOCKER_HOST=unix://... docker-compose -p NAME up -d` with
#   `network_mode: host` starts the service with no login when the image is
#   already on the engine; without the image it tries to pull and fails with
#   "no basic auth credentials". It prints a "running in swarm mode" warning
#   (harmless). Never let compose make its default bridge network: always
#   network_mode host or none.
# * busybox's `sleep` as PID 1 ignores SIGTERM (stop took 10 s), so the image
#   CMD traps TERM: stop/rm/compose down take < 1 s.
# * htpasswd: registry 2.8.2 re-reads the htpasswd file when it changes (by
#   mtime), no restart needed: after `htpasswd -B -b FILE USER NEW` the old
#   password gets 401 and the new one 200 at once; a second user added to the
#   file works at once too.
# * Every docker CLI call here uses a private DOCKER_CONFIG in the temp dir
#   (never ~/.docker); the engine key goes there too, not /etc/docker.
# * Timings here: install 28-33 s (first time, with apt-get update), 1 s when
#   installed; start 4-5 s (dockerd 0.5 s, registry 0.2 s, image+push ~1 s,
#   swarm init + ingress/gwbridge removal ~2-3 s); stop 2-3 s.
# ---------------------------------------------------------------------------

DSVC_TMP=""
DSVC_DOCKERD_PID=""
DSVC_REGISTRY_PID=""
DSVC_GWBRIDGE_PREEXISTED=0
DSVC_IPFWD_BEFORE=""
DSVC_DOCKER=""
DSVC_TLS_PORT=""

_dsvc_log() { printf 'docker-services: %s\n' "$*"; }
_dsvc_err() { printf 'docker-services: error: %s\n' "$*" >&2; }

_dsvc_free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

_dsvc_pkg_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

# The docker CLI bound to our daemon, with a private config dir (never ~/.docker).
_dsvc_docker() {
    DOCKER_CONFIG="$DSVC_TMP/docker-config" timeout 120 "$DSVC_DOCKER" -H "unix://$DSVC_TMP/docker.sock" "$@"
}

_dsvc_wait_pid_gone() { # pid, tenths of a second
    local pid=$1 n=$2
    while [ "$n" -gt 0 ]; do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
        n=$((n - 1))
    done
    ! kill -0 "$pid" 2>/dev/null
}

_dsvc_stop_pid() { # pid, name, seconds
    local pid=$1 name=$2 secs=${3:-20}
    [ -n "$pid" ] || return 0
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null
    if ! _dsvc_wait_pid_gone "$pid" $((secs * 10)); then
        _dsvc_log "$name (pid $pid) did not stop in $secs s: SIGKILL"
        kill -KILL "$pid" 2>/dev/null
        _dsvc_wait_pid_gone "$pid" 50
    fi
    wait "$pid" 2>/dev/null || true
}

# Unmount every mount point at or under the prefix (a path ending in /),
# deepest first. Fails if any is left.
_dsvc_umount_under() {
    local prefix=$1 m left
    for m in $(findmnt -rn -o TARGET | awk -v p="$prefix" 'index($0 "/", p) == 1 { print length, $0 }' | sort -rn | cut -d' ' -f2-); do
        umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || _dsvc_log "could not unmount $m"
    done
    left="$(findmnt -rn -o TARGET | awk -v p="$prefix" 'index($0 "/", p) == 1' || true)"
    [ -z "$left" ] || { _dsvc_err "still mounted: $left"; return 1; }
}

# pids of what a package could have started (one pgrep each: pgrep warns on
# a -x pattern longer than 15 characters).
_dsvc_service_pids() {
    { pgrep -x dockerd; pgrep -x containerd; pgrep -x docker-registry; } 2>/dev/null | sort || true
}

# --- install -------------------------------------------------------------------
docker_services_install() {
    local sudo="${SUDO:-}"
    if [ "$(id -u)" -ne 0 ] && [ -z "$sudo" ]; then
        command -v sudo >/dev/null || { _dsvc_err "not root and no sudo"; return 1; }
        sudo=sudo
    fi
    local missing=() p
    for p in docker.io docker-registry docker-compose busybox-static apache2-utils openssl; do
        _dsvc_pkg_installed "$p" || missing+=("$p")
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        _dsvc_log "installed: $(dockerd --version), $(/usr/bin/docker-registry --version | awk '{print $2, $3}'), $(docker-compose version --short 2>/dev/null || echo 'docker-compose ?')"
        return 0
    fi
    _dsvc_log "installing: ${missing[*]}"

    # Keep the postinsts from starting a system dockerd/containerd/registry
    # (invoke-rc.d and deb-systemd-invoke both obey policy-rc.d).
    local before after rc=0 policy=/usr/sbin/policy-rc.d policy_backup=""
    before="$(_dsvc_service_pids)"
    if [ -e "$policy" ]; then
        policy_backup="$(mktemp -t policy-rc.d.XXXXXX)"
        $sudo cp -p "$policy" "$policy_backup"
    fi
    printf '#!/bin/sh\n# scripts/lib/docker-services.sh: no service starts during apt-get install\nexit 101\n' |
        $sudo tee "$policy" >/dev/null && $sudo chmod 0755 "$policy"

    if declare -F apt_install >/dev/null; then
        apt_install "${missing[@]}" || rc=$?
    else
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get update || rc=$?
        [ "$rc" = 0 ] && { $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" || rc=$?; }
    fi

    if [ -n "$policy_backup" ]; then
        $sudo cp -p "$policy_backup" "$policy"
        rm -f "$policy_backup"
    else
        $sudo rm -f "$policy"
    fi

    # Anything the install started anyway: stop it, by pid, only if new.
    after="$(_dsvc_service_pids)"
    local pid
    for pid in $(comm -13 <(printf '%s\n' "$before") <(printf '%s\n' "$after")); do
        _dsvc_log "the install started $(ps -o comm= -p "$pid") (pid $pid): stopping it"
        $sudo kill -TERM "$pid" 2>/dev/null || true
    done
    [ "$rc" = 0 ] || { _dsvc_err "apt-get install ${missing[*]} failed ($rc)"; return "$rc"; }
    ldd /bin/busybox >/dev/null 2>&1 && { _dsvc_err "/bin/busybox is not static (busybox-static missing?)"; return 1; }
    _dsvc_log "installed: $(dockerd --version), $(/usr/bin/docker-registry --version | awk '{print $2, $3}'), docker-compose $(docker-compose version --short 2>/dev/null)"
}

# --- start -----------------------------------------------------------------------
# A CA, the daemon's certificate (127.0.0.1, localhost) and a client
# certificate, as `docker --tlsverify` expects them, valid for two days.
_dsvc_make_tls() {
    local d="$DSVC_TMP/tls" ext
    mkdir -p "$d" && chmod 0700 "$d"
    ext="$d/ext.cnf"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj "/CN=registry test docker CA" -keyout "$d/ca-key.pem" -out "$d/ca.pem" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
        >/dev/null 2>&1 || return 1
    local who
    for who in server client; do
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
            -subj "/CN=$who" -keyout "$d/$who-key.pem" -out "$d/$who.csr" >/dev/null 2>&1 || return 1
        if [ "$who" = server ]; then
            printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >"$ext"
        else
            printf 'extendedKeyUsage=clientAuth\n' >"$ext"
        fi
        openssl x509 -req -in "$d/$who.csr" -CA "$d/ca.pem" -CAkey "$d/ca-key.pem" -CAcreateserial \
            -days 2 -extfile "$ext" -out "$d/$who-cert.pem" >/dev/null 2>&1 || return 1
    done
    # The client side under the names the docker CLI uses.
    cp "$d/client-cert.pem" "$d/cert.pem" && cp "$d/client-key.pem" "$d/key.pem"
}

_dsvc_start_dockerd() { # storage driver
    local driver=$1
    # A failed earlier attempt can leave data/ bind-mounted: unmount first.
    _dsvc_umount_under "$DSVC_TMP/data/" || return 1
    _dsvc_umount_under "$DSVC_TMP/exec/" || return 1
    rm -rf "$DSVC_TMP/data" "$DSVC_TMP/exec"
    mkdir -p "$DSVC_TMP/data" "$DSVC_TMP/exec"
    # Our own daemon.json, so /etc/docker/daemon.json never applies, and the
    # engine key stays in the temp dir (default: /etc/docker/key.json).
    printf '{"deprecated-key-path": "%s"}\n' "$DSVC_TMP/key.json" >"$DSVC_TMP/daemon.json"
    dockerd \
        --config-file "$DSVC_TMP/daemon.json" \
        --data-root "$DSVC_TMP/data" \
        --exec-root "$DSVC_TMP/exec" \
        --pidfile "$DSVC_TMP/dockerd.pid" \
        --host "unix://$DSVC_TMP/docker.sock" \
        --host "tcp://127.0.0.1:$DSVC_TLS_PORT" \
        --tlsverify --tlscacert "$DSVC_TMP/tls/ca.pem" \
        --tlscert "$DSVC_TMP/tls/server-cert.pem" --tlskey "$DSVC_TMP/tls/server-key.pem" \
        --bridge=none --iptables=false --ip-masq=false --ip-forward=false \
        --storage-driver "$driver" \
        --shutdown-timeout 5 \
        >>"$DSVC_TMP/dockerd.log" 2>&1 &
    DSVC_DOCKERD_PID=$!
    local i
    for i in $(seq 1 150); do
        if ! kill -0 "$DSVC_DOCKERD_PID" 2>/dev/null; then
            wait "$DSVC_DOCKERD_PID" 2>/dev/null || true
            DSVC_DOCKERD_PID=""
            return 1
        fi
        _dsvc_docker version >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    _dsvc_stop_pid "$DSVC_DOCKERD_PID" dockerd 10
    DSVC_DOCKERD_PID=""
    return 1
}

_dsvc_start_registry() {
    local port user pw
    port="$(_dsvc_free_port)"
    user="deploy-test"
    pw="$(head -c 18 /dev/urandom | base64 | tr -d '/+=')"
    mkdir -p "$DSVC_TMP/registry/storage"
    printf '%s' "$pw" | htpasswd -B -i -c "$DSVC_TMP/registry/htpasswd" "$user" 2>/dev/null ||
        { _dsvc_err "htpasswd failed"; return 1; }
    cat >"$DSVC_TMP/registry/config.yml" <<EOF
version: 0.1
log:
  level: info
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $DSVC_TMP/registry/storage
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
  secret: $(head -c 24 /dev/urandom | base64 | tr -d '/+=')
auth:
  htpasswd:
    realm: registry-test
    path: $DSVC_TMP/registry/htpasswd
EOF
    /usr/bin/docker-registry serve "$DSVC_TMP/registry/config.yml" >>"$DSVC_TMP/registry.log" 2>&1 &
    DSVC_REGISTRY_PID=$!
    local i code
    for i in $(seq 1 100); do
        kill -0 "$DSVC_REGISTRY_PID" 2>/dev/null || { _dsvc_err "docker-registry exited"; DSVC_REGISTRY_PID=""; return 1; }
        # 401 without credentials = up, with auth on.
        code="$(python3 - "$port" <<'PY' 2>/dev/null
import sys, urllib.request, urllib.error
try:
    urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/v2/", timeout=1)
    print(200)
except urllib.error.HTTPError as e:
    print(e.code)
except Exception:
    print(0)
PY
)"
        [ "$code" = 401 ] && break
        [ "$code" = 200 ] && { _dsvc_err "registry answers /v2/ without auth"; return 1; }
        sleep 0.1
    done
    [ "$code" = 401 ] || { _dsvc_err "registry not up on 127.0.0.1:$port"; return 1; }
    export REGISTRY_TEST_DISTRIBUTION="127.0.0.1:$port"
    export REGISTRY_TEST_DISTRIBUTION_USER="$user"
    export REGISTRY_TEST_DISTRIBUTION_PASSWORD="$pw"
    export REGISTRY_TEST_DISTRIBUTION_HTPASSWD="$DSVC_TMP/registry/htpasswd"
}

_dsvc_build_image() {
    local image="$REGISTRY_TEST_DISTRIBUTION/test/busybox:1" r="$DSVC_TMP/rootfs" a
    mkdir -p "$r/bin" "$r/etc" "$r/tmp" "$r/proc" "$r/sys" "$r/dev" "$r/root"
    cp /bin/busybox "$r/bin/busybox"
    for a in sh sleep echo true false cat ls env id hostname ps wget nc printf test; do
        ln -sf busybox "$r/bin/$a"
    done
    printf 'root:x:0:0:root:/root:/bin/sh\n' >"$r/etc/passwd"
    printf 'root:x:0:\n' >"$r/etc/group"
    # PID 1 ignores SIGTERM unless it traps it: trap, so stops are instant.
    tar -C "$r" -c . | _dsvc_docker import \
        --change 'CMD ["/bin/sh", "-c", "trap \"exit 0\" TERM INT; sleep 86400 & wait"]' \
        - "$image" >/dev/null || { _dsvc_err "docker import failed"; return 1; }
    printf '%s' "$REGISTRY_TEST_DISTRIBUTION_PASSWORD" |
        _dsvc_docker login -u "$REGISTRY_TEST_DISTRIBUTION_USER" --password-stdin "$REGISTRY_TEST_DISTRIBUTION" >/dev/null 2>&1 ||
        { _dsvc_err "docker login $REGISTRY_TEST_DISTRIBUTION failed"; return 1; }
    _dsvc_docker push "$image" >"$DSVC_TMP/push.log" 2>&1 || { cat "$DSVC_TMP/push.log" >&2; _dsvc_err "docker push failed"; return 1; }
    local digest
    digest="$(_dsvc_docker image inspect --format '{{range .RepoDigests}}{{.}}{{end}}' "$image")" || true
    _dsvc_docker logout "$REGISTRY_TEST_DISTRIBUTION" >/dev/null 2>&1 || true
    # Off the engine again: every later pull has to authenticate.
    _dsvc_docker rmi "$image" >/dev/null || { _dsvc_err "docker rmi $image failed"; return 1; }
    export REGISTRY_TEST_IMAGE="$image"
    export REGISTRY_TEST_IMAGE_DIGEST="${digest##*@}"
}

_dsvc_gwbridge_rm() { # remove the docker_gwbridge network through the daemon, retrying
    local i
    for i in $(seq 1 20); do
        _dsvc_docker network inspect docker_gwbridge >/dev/null 2>&1 || return 0
        _dsvc_docker network rm docker_gwbridge >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    return 1
}

_dsvc_swarm_init() {
    if ss -Hltn 'sport = :7946' 2>/dev/null | grep -q . || ss -Hlun 'sport = :7946' 2>/dev/null | grep -q .; then
        _dsvc_log "port 7946 (swarm gossip, fixed in dockerd 20.10) is taken by another process: swarm NOT started"
        return 1
    fi
    local port i
    port="$(_dsvc_free_port)"
    _dsvc_docker swarm init --advertise-addr 127.0.0.1 --listen-addr "127.0.0.1:$port" >/dev/null ||
        { _dsvc_err "docker swarm init failed"; return 1; }
    for i in $(seq 1 100); do
        [ "$(_dsvc_docker node inspect self --format '{{.Status.State}}' 2>/dev/null)" = ready ] && break
        sleep 0.2
    done
    [ "$(_dsvc_docker info --format '{{.Swarm.LocalNodeState}}')" = active ] || { _dsvc_err "swarm not active"; return 1; }
    # The ingress attachment makes docker_gwbridge (and later a VXLAN socket on
    # 0.0.0.0:4789). Let it appear (1-3 s here), then remove ingress and it.
    for i in $(seq 1 50); do
        _dsvc_docker network inspect docker_gwbridge >/dev/null 2>&1 && break
        sleep 0.2
    done
    for i in $(seq 1 20); do
        _dsvc_docker network inspect ingress >/dev/null 2>&1 || break
        echo y | _dsvc_docker network rm ingress >/dev/null 2>&1 || sleep 0.5
    done
    _dsvc_docker network inspect ingress >/dev/null 2>&1 && { _dsvc_err "could not remove the ingress network"; return 1; }
    _dsvc_gwbridge_rm || { _dsvc_err "could not remove docker_gwbridge"; return 1; }
    export REGISTRY_TEST_SWARM=1
}

docker_services_start() {
    local t0=$SECONDS
    [ "$(id -u)" -eq 0 ] || { _dsvc_err "dockerd needs root"; return 1; }
    [ -z "$DSVC_TMP" ] || { _dsvc_err "already started ($DSVC_TMP)"; return 1; }
    local c
    for c in dockerd containerd runc docker-compose htpasswd openssl /usr/bin/docker-registry /bin/busybox; do
        command -v "$c" >/dev/null || { _dsvc_err "$c missing: run docker_services_install"; return 1; }
    done
    if ldd /bin/busybox >/dev/null 2>&1; then
        _dsvc_err "/bin/busybox is dynamically linked: the test image needs busybox-static"
        return 1
    fi
    DSVC_DOCKER=/usr/bin/docker
    [ -x "$DSVC_DOCKER" ] || DSVC_DOCKER="$(command -v docker)" || { _dsvc_err "no docker CLI"; return 1; }

    DSVC_TMP="$(mktemp -d -t registry-docker.XXXXXX)"
    chmod 0711 "$DSVC_TMP"
    mkdir -p "$DSVC_TMP/docker-config"
    ip link show docker_gwbridge >/dev/null 2>&1 && DSVC_GWBRIDGE_PREEXISTED=1
    DSVC_IPFWD_BEFORE="$(cat /proc/sys/net/ipv4/ip_forward 2>/dev/null || true)"

    _dsvc_make_tls || { _dsvc_err "openssl could not make the TLS test files"; return 1; }
    DSVC_TLS_PORT="$(_dsvc_free_port)"
    local driver=""
    # shellcheck disable=SC2086
    for c in ${DOCKER_SERVICES_STORAGE_DRIVER:-overlay2 vfs}; do
        if _dsvc_start_dockerd "$c"; then
            driver=$c
            break
        fi
        _dsvc_log "dockerd did not start with --storage-driver $c (log: $DSVC_TMP/dockerd.log)"
    done
    [ -n "$driver" ] || { docker_services_logs >&2; _dsvc_err "dockerd did not start"; return 1; }
    export REGISTRY_TEST_DOCKER_HOST="unix://$DSVC_TMP/docker.sock"
    export REGISTRY_TEST_DOCKER_TLS_HOST="tcp://127.0.0.1:$DSVC_TLS_PORT"
    export REGISTRY_TEST_DOCKER_TLS_DIR="$DSVC_TMP/tls"
    export REGISTRY_TEST_DOCKER_API_VERSION
    REGISTRY_TEST_DOCKER_API_VERSION="$(_dsvc_docker version --format '{{.Server.APIVersion}}' || true)"
    export REGISTRY_TEST_DOCKER_CLI="$DSVC_DOCKER"
    export REGISTRY_TEST_DOCKER_COMPOSE
    REGISTRY_TEST_DOCKER_COMPOSE="$(command -v docker-compose)"
    _dsvc_log "dockerd $(_dsvc_docker version --format '{{.Server.Version}}') API $REGISTRY_TEST_DOCKER_API_VERSION pid $DSVC_DOCKERD_PID, storage $driver, $REGISTRY_TEST_DOCKER_HOST [$((SECONDS - t0)) s]"

    _dsvc_start_registry || { docker_services_logs >&2; return 1; }
    _dsvc_log "registry $(/usr/bin/docker-registry --version | awk '{print $3}') pid $DSVC_REGISTRY_PID on http://$REGISTRY_TEST_DISTRIBUTION (htpasswd $REGISTRY_TEST_DISTRIBUTION_HTPASSWD) [$((SECONDS - t0)) s]"

    _dsvc_build_image || { docker_services_logs >&2; return 1; }
    _dsvc_log "image $REGISTRY_TEST_IMAGE ($REGISTRY_TEST_IMAGE_DIGEST) pushed, removed from the engine [$((SECONDS - t0)) s]"

    if _dsvc_swarm_init; then
        _dsvc_log "swarm active (ingress and docker_gwbridge removed: host-network services only) [$((SECONDS - t0)) s]"
    else
        unset REGISTRY_TEST_SWARM
        _dsvc_log "swarm NOT active: swarm tests must skip (or fail when CI=true)"
    fi
}

# --- stop --------------------------------------------------------------------------
docker_services_stop() {
    [ -n "$DSVC_TMP" ] || return 0
    local t0=$SECONDS ids
    if [ -n "$DSVC_DOCKERD_PID" ] && kill -0 "$DSVC_DOCKERD_PID" 2>/dev/null; then
        if [ "$(_dsvc_docker info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null)" = active ]; then
            ids="$(_dsvc_docker service ls -q 2>/dev/null || true)"
            # shellcheck disable=SC2086
            [ -z "$ids" ] || _dsvc_docker service rm $ids >/dev/null 2>&1 || true
            _dsvc_docker swarm leave --force >/dev/null 2>&1 || _dsvc_log "swarm leave failed"
        fi
        ids="$(_dsvc_docker ps -aq 2>/dev/null || true)"
        # shellcheck disable=SC2086
        [ -z "$ids" ] || _dsvc_docker rm -f $ids >/dev/null 2>&1 || true
        _dsvc_gwbridge_rm || _dsvc_log "could not remove the docker_gwbridge network"
    fi
    _dsvc_stop_pid "$DSVC_DOCKERD_PID" dockerd 20
    _dsvc_stop_pid "$DSVC_REGISTRY_PID" docker-registry 10
    DSVC_DOCKERD_PID=""
    DSVC_REGISTRY_PID=""

    # Children of our dockerd that outlived it (containerd, shims): their
    # command lines name our temp dir. Stop them by pid.
    local pid
    for pid in $(pgrep -f -- "$DSVC_TMP/" || true); do
        [ "$pid" = "$$" ] && continue
        _dsvc_log "left over: pid $pid $(tr '\0' ' ' </proc/"$pid"/cmdline 2>/dev/null | cut -c1-120): stopping it"
        _dsvc_stop_pid "$pid" "pid $pid" 5
    done

    if [ "$DSVC_GWBRIDGE_PREEXISTED" = 0 ] && ip link show docker_gwbridge >/dev/null 2>&1; then
        _dsvc_log "removing the docker_gwbridge interface"
        ip link delete docker_gwbridge || true
    fi
    if [ -n "$DSVC_IPFWD_BEFORE" ] && [ "$(cat /proc/sys/net/ipv4/ip_forward)" != "$DSVC_IPFWD_BEFORE" ]; then
        _dsvc_log "restoring net.ipv4.ip_forward=$DSVC_IPFWD_BEFORE"
        echo "$DSVC_IPFWD_BEFORE" >/proc/sys/net/ipv4/ip_forward || true
    fi

    # Mounts under the temp dir (netns nsfs, overlay, data-root), deepest
    # first; never rm -rf through a mount.
    if _dsvc_umount_under "$DSVC_TMP/"; then
        rm -rf "$DSVC_TMP"
    else
        _dsvc_err "still mounted, $DSVC_TMP kept"
    fi
    _dsvc_log "stopped [$((SECONDS - t0)) s]"
    DSVC_TMP=""
    unset REGISTRY_TEST_DOCKER_HOST REGISTRY_TEST_DOCKER_API_VERSION REGISTRY_TEST_DOCKER_CLI \
        REGISTRY_TEST_DOCKER_COMPOSE REGISTRY_TEST_DISTRIBUTION REGISTRY_TEST_DISTRIBUTION_USER \
        REGISTRY_TEST_DISTRIBUTION_PASSWORD REGISTRY_TEST_DISTRIBUTION_HTPASSWD \
        REGISTRY_TEST_IMAGE REGISTRY_TEST_IMAGE_DIGEST REGISTRY_TEST_SWARM \
        REGISTRY_TEST_DOCKER_TLS_HOST REGISTRY_TEST_DOCKER_TLS_DIR
}

docker_services_logs() {
    [ -n "$DSVC_TMP" ] || return 0
    local f
    for f in dockerd.log registry.log; do
        [ -f "$DSVC_TMP/$f" ] || continue
        echo "---- $f (last 40 lines) ----"
        tail -n 40 "$DSVC_TMP/$f"
    done
}
