#!/usr/bin/env bash
# Configures one node of the dual-vti lab from inside its network namespace or container
# and starts its daemons; both runners (labs/lab and containerlab) call exactly this.
#
#   node.sh NODE [STACK]      NODE: siteA siteB lanA lanB
#                             STACK (site A only): stock | healthcheck | agent
# Environment: LAB_TUNNEL_KIND=vti|xfrm (default vti), LAB_FAMILY=ipv4|ipv6|dual (the
# underlays: all IPv4, all IPv6, or isp1 IPv4 and isp2/isp3 IPv6; default ipv4; inside,
# every variant carries IPv4 and IPv6), LAB_STATE_ROOT (default
# /run/vti-failover-lab), LAB_VENV (default <checkout>/.venv), LAB_AGENT_CONFIG (stack
# agent: another config than siteA/vti-failover.yaml).
# Daemons write <state>/<name>.log and <name>.pid; teardown kills those pids.
set -euo pipefail
node=${1:?usage: node.sh NODE [STACK]}
stack=${2:-stock}
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
kind=${LAB_TUNNEL_KIND:-vti}
family=${LAB_FAMILY:-ipv4}
state=${LAB_STATE_ROOT:-/run/vti-failover-lab}/$node
venv=${LAB_VENV:-$top/.venv}
export PATH="$venv/bin:$PATH:/usr/sbin:/sbin"
# charon and swanctl alike read the lab's strongswan.conf, never /etc's.
export STRONGSWAN_CONF="$here/strongswan.conf"
mkdir -p "$state/run"
# A timestamped trace of every step, for when a node is slow or fails to come up.
exec 19>"$state/node.trace"
BASH_XTRACEFD=19
PS4='+ ${EPOCHREALTIME} '
set -x

say() { echo "[$node] $*"; }

daemon() { # NAME CMD...: start CMD in the background, log and pid in the state dir
  local name=$1
  shift
  "$@" >"$state/$name.log" 2>&1 &
  echo $! >"$state/$name.pid"
}

lan_host() { # ADDR/LEN GATEWAY REMOTE_LAN ADDR6/LEN GATEWAY6 REMOTE_LAN6
  ip addr add "$1" dev eth1
  ip -6 addr add "$4" dev eth1 nodad
  ip link set eth1 up
  ip link set lo up
  # A route to the far LAN only: a containerlab node keeps its management default route.
  ip route replace "$3" via "$2"
  ip -6 route replace "$6" via "$5"
}

underlay6() { # INDEX: is ISP path INDEX IPv6 in this family?
  [ "$family" = ipv6 ] || { [ "$family" = dual ] && [ "$1" != 1 ]; }
}

underlay_addr() { # INDEX HOST: this host's (1 = site A, 2 = site B) underlay address on path INDEX
  if underlay6 "$1"; then
    echo "2001:db8:f$1::$2"
  else
    case $1 in 1) echo "192.0.2.$2" ;; 2) echo "198.51.100.$2" ;; 3) echo "203.0.113.$2" ;; esac
  fi
}

tunnels_config() { # HOST: this site's three tunnels as vti-failover config, for `apply`
  local h=$1 i dev peer local remote
  echo "# Written by node.sh for \`vti-failover apply\` ($kind tunnels, $family underlays)."
  echo "agent_id: site-$([ "$h" = 1 ] && echo a || echo b)"
  echo "tunnels:"
  for i in 1 2 3; do
    local=$(underlay_addr "$i" "$h")
    remote=$(underlay_addr "$i" $((3 - h)))
    peer=$((3 - h))
    dev=vti$i
    [ "$i" = 3 ] && dev=xfrm3
    echo "  - name: tun$i"
    echo "    interface: $dev"
    echo "    underlay: {local: \"$local\", remote: \"$remote\", device: isp$i}"
    # The third path is always an XFRM interface: a mixed VTI + XFRM site.
    if [ "$kind" = xfrm ] || [ "$i" = 3 ]; then
      # The xfrm variant ties SAs by if_id, not mark (swanctl.conf if_id_in/if_id_out).
      echo "    kind: xfrm"
      echo "    if_id: $i"
    else
      # key = the IPsec mark of this tunnel's SAs (swanctl.conf mark_in/mark_out); an
      # IPv6 underlay makes it an ip6 VTI.
      echo "    kind: vti"
      echo "    key: $i"
      echo "    mark: $i"
    fi
    echo "    inner: {local: 169.254.$i.$h/30, peer: 169.254.$i.$peer}"
    echo "    inner6: {local: \"fd00:$i::$h/64\", peer: \"fd00:$i::$peer\"}"
    echo "    mtu: 1400"
    echo "    sources: [probe]"
  done
}

tunnels() { # HOST: vti1, vti2 and xfrm3 with addresses, MTU and sysctls, by `vti-failover apply`
  tunnels_config "$1" >"$state/tunnels.yaml"
  # The SA, not an IPsec policy, decides what enters a tunnel: apply sets disable_policy
  # and loose rp_filter, as it would on a router.
  vti-failover apply "$state/tunnels.yaml" >"$state/apply.log" 2>&1 || {
    say "vti-failover apply failed:"
    cat "$state/apply.log" >&2
    exit 1
  }
}

swanctl_conf() { # the site's swanctl.conf for this kind and family, in the state dir
  local src="$here/$node/swanctl.conf" subst=() i
  # The xfrm variant ties SAs by if_id, not mark.
  [ "$kind" = xfrm ] && subst+=(-e 's/mark_in = /if_id_in = /; s/mark_out = /if_id_out = /')
  for i in 1 2 3; do
    if underlay6 "$i"; then
      local v4
      v4=$(family=ipv4 underlay_addr "$i" X)
      v4=${v4%X}
      subst+=(-e "s/\\b${v4//./\\.}\\([12]\\)\\b/2001:db8:f$i::\\1/g")
    fi
  done
  if [ ${#subst[@]} -gt 0 ]; then
    sed "${subst[@]}" "$src" >"$state/swanctl.conf"
  else
    cp "$src" "$state/swanctl.conf"
  fi
  echo "$state/swanctl.conf"
}

start_charon() {
  # strongSwan 5.9 hard-codes /var/run/charon.pid: each charon gets a private /run bound
  # to its state dir, which also puts the vici socket at <state>/run/charon.vici.
  daemon charon \
    unshare -m sh -c 'mount --bind "$0" /run && exec /usr/lib/ipsec/charon' "$state/run"
  local n=0
  until [ -S "$state/run/charon.vici" ]; do
    n=$((n + 1))
    [ $n -gt 200 ] && { say "charon did not open its vici socket"; exit 1; }
    sleep 0.1
  done
  swanctl --load-all --file "$(swanctl_conf)" --uri "unix://$state/run/charon.vici" >/dev/null
}

wait_children() { # site A: until every CHILD_SA are installed, re-initiating missing ones
  local deadline=$((SECONDS + ${LAB_SA_WAIT_S:-90})) child
  while [ $SECONDS -lt $deadline ]; do
    local missing=0
    for child in tun1 tun2 tun3; do
      if ! swanctl --list-sas --ike "$child" --uri "unix://$state/run/charon.vici" 2>/dev/null |
        grep -q INSTALLED; then
        missing=1
        # The responder may have come up after our first try (NO_PROPOSAL_CHOSEN is final).
        swanctl --initiate --child "$child" --timeout 5 \
          --uri "unix://$state/run/charon.vici" >/dev/null 2>&1 || true
      fi
    done
    [ $missing = 0 ] && return 0
    sleep 1
  done
  say "tunnels not established after ${LAB_SA_WAIT_S:-90}s"
  return 1
}

site() { # LAN/LEN LAN6/LEN HOST (1 = site A, 2 = site B)
  local h=$3 i
  modprobe -q -a ip_vti ip6_vti xfrm_interface esp4 esp6 xfrm_user 2>/dev/null || true
  ip link set lo up
  sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0
  sysctl -qw net.ipv6.conf.all.forwarding=1
  ip addr add "$1" dev lan
  ip -6 addr add "$2" dev lan nodad
  ip link set lan up
  for i in 1 2 3; do
    if underlay6 "$i"; then
      ip -6 addr add "$(underlay_addr "$i" "$h")/64" dev "isp$i" nodad
    else
      ip addr add "$(underlay_addr "$i" "$h")/30" dev "isp$i"
    fi
    ip link set "isp$i" up
  done
  # Tunnels before charon, so SAs find their interfaces from the first packet.
  tunnels "$h"
  start_charon
}

exabgp_env() {
  export exabgp_daemon_user=root exabgp_api_cli=false exabgp_log_destination=stdout
  export exabgp_daemon_daemonize=false
}

case $node in
  siteB)
    site 10.2.0.1/24 2001:db8:2::1/64 2
    daemon bird bird -f -c "$here/siteB/bird.conf" -s "$state/bird.ctl"
    ;;
  siteA)
    site 10.1.0.1/24 2001:db8:1::1/64 1
    daemon mosquitto mosquitto -c "$here/siteA/mosquitto.conf"
    case $stack in
      stock | healthcheck)
        # Without the agent nothing installs routes to site B (ExaBGP never does): plain
        # static routes, primary preferred, the way such sites are usually built.
        ip route add 10.2.0.0/24 dev vti1 metric 10
        ip route add 10.2.0.0/24 dev vti2 metric 100
        exabgp_env
        daemon exabgp exabgp server "$here/siteA/exabgp-$stack.conf"
        ;;
      agent)
        # The agent starts ExaBGP itself and owns the routes to site B.
        exabgp_env
        cfg="$here/siteA/vti-failover.yaml"
        [ "$kind" = xfrm ] && cfg="$here/siteA/vti-failover-xfrm.yaml"
        # The benchmark passes a variant (e.g. its fastest settings) derived from it.
        cfg=${LAB_AGENT_CONFIG:-$cfg}
        daemon vti-failover vti-failover run "$cfg"
        ;;
      *)
        say "unknown stack $stack (stock | healthcheck | agent)"
        exit 2
        ;;
    esac
    wait_children
    ;;
  lanA) lan_host 10.1.0.10/24 10.1.0.1 10.2.0.0/24 2001:db8:1::10/64 2001:db8:1::1 2001:db8:2::/64 ;;
  lanB) lan_host 10.2.0.10/24 10.2.0.1 10.1.0.0/24 2001:db8:2::10/64 2001:db8:2::1 2001:db8:1::/64 ;;
  *)
    say "unknown node (siteA siteB lanA lanB)"
    exit 2
    ;;
esac
case $node in
  siteA) say "configured ($kind tunnels, $family underlays, $stack stack)" ;;
  site*) say "configured ($kind tunnels, $family underlays)" ;;
  *) say configured ;;
esac
