# Shell helpers of the benchmark scripts (compare.sh, http20.sh, cluster.sh): `source` it after
# `cd` to the repository. Sets `dir` (a temporary folder, removed on exit) and `pids` (processes
# killed on exit).

dir=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
# A free TCP port on 127.0.0.1.
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# Waits up to 10 s for 127.0.0.1:$1 to accept connections.
wait_port() { for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened"; exit 1; }

# nginx_start WORKERS PORT: nginx serving $dir/www/f.txt (200 bytes) with WORKERS workers on
# 127.0.0.1:PORT, keep-alive without limit, no access log; its pid in NGINX_PID (and in pids).
nginx_start() {
  mkdir -p "$dir/www" "$dir/nginx"
  head -c 200 /dev/zero | tr '\0' 'x' > "$dir/www/f.txt"
  cat > "$dir/nginx/nginx.conf" <<NGX
worker_processes $1;
pid $dir/nginx/nginx.pid;
error_log $dir/nginx/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $dir/nginx; proxy_temp_path $dir/nginx; fastcgi_temp_path $dir/nginx;
  uwsgi_temp_path $dir/nginx; scgi_temp_path $dir/nginx;
  keepalive_requests 100000000;
  server { listen 127.0.0.1:$2; root $dir/www; }
}
NGX
  nginx -c "$dir/nginx/nginx.conf" -g 'daemon off;' &
  NGINX_PID=$!
  pids+=($NGINX_PID)
  wait_port "$2"
}
