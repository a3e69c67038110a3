//! A real nginx for the network install tests: started as a child process on a free
//! 127.0.0.1 port with everything (config, pid, logs, temp paths, document root) in its
//! own temporary directory, killed on drop. Optionally serves HTTPS with a throwaway CA
//! made with `openssl`, and can require client certificates.
//!
//! Under `CI=true` a missing nginx or openssl panics; elsewhere [`Nginx::start`] returns
//! `None` and the test skips with a message.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const NGINX_PATHS: &[&str] = &["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"];

/// Finds a tool, or says why the test is skipped (panics under CI).
fn require(paths: &[&str], name: &str) -> Option<PathBuf> {
    let found = paths
        .iter()
        .map(PathBuf::from)
        .chain(
            std::env::var_os("PATH")
                .map(|p| {
                    std::env::split_paths(&p)
                        .map(|d| d.join(name))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default(),
        )
        .find(|p| p.is_file());
    if found.is_none() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{name} is not installed (apt-get install {name}); CI must run these tests");
        }
        eprintln!("skipping: {name} is not installed (apt-get install {name})");
    }
    found
}

/// TLS material made by [`Tls::generate`]: a CA, a server certificate for 127.0.0.1 and
/// localhost, and a client certificate, all signed by the CA.
#[derive(Debug, Clone)]
pub struct Tls {
    /// The CA certificate (PEM).
    pub ca: PathBuf,
    /// The server certificate and key.
    pub server_cert: PathBuf,
    /// The server key.
    pub server_key: PathBuf,
    /// The client certificate.
    pub client_cert: PathBuf,
    /// The client key.
    pub client_key: PathBuf,
}

impl Tls {
    /// Generates the material into `dir` with `openssl` (EC P-256, valid one day).
    pub fn generate(dir: &Path) -> Option<Tls> {
        let openssl = require(&["/usr/bin/openssl"], "openssl")?;
        std::fs::create_dir_all(dir).unwrap();
        let p = |n: &str| dir.join(n);
        let run = |args: &[&str]| {
            let out = Command::new(&openssl)
                .args(args)
                .current_dir(dir)
                .stdin(Stdio::null())
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "openssl {args:?} failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
        let mut ca = vec!["req", "-x509", "-nodes", "-days", "1"];
        ca.extend(ec);
        ca.extend([
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-subj",
            "/CN=flipslot test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        run(&ca);
        for (name, cn, ext) in [
            (
                "server",
                "localhost",
                "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
            ),
            (
                "client",
                "flipslot-device-1",
                "extendedKeyUsage=clientAuth\n",
            ),
        ] {
            let ext_file = format!("{name}.ext");
            std::fs::write(
                p(&ext_file),
                format!("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n{ext}"),
            )
            .unwrap();
            let (key, csr, cert) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.pem"),
            );
            let subj = format!("/CN={cn}");
            let mut req = vec!["req", "-new", "-nodes"];
            req.extend(ec);
            req.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
            run(&req);
            run(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "1",
                "-out",
                &cert,
                "-extfile",
                &ext_file,
            ]);
        }
        Some(Tls {
            ca: p("ca.pem"),
            server_cert: p("server.pem"),
            server_key: p("server.key"),
            client_cert: p("client.pem"),
            client_key: p("client.key"),
        })
    }
}

/// How nginx serves.
#[derive(Debug, Clone, Default)]
pub struct NginxConfig {
    /// Serve HTTPS with this material instead of plain HTTP.
    pub tls: Option<Tls>,
    /// With `tls`: require a client certificate signed by the CA (`ssl_verify_client on`).
    pub verify_client: bool,
}

/// A running nginx, killed on drop.
#[derive(Debug)]
pub struct Nginx {
    child: Child,
    dir: tempfile::TempDir,
    /// The port on 127.0.0.1.
    pub port: u16,
    https: bool,
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Nginx {
    /// Starts nginx, or returns `None` (outside CI) when it is not installed.
    pub fn start(cfg: &NginxConfig) -> Option<Nginx> {
        let bin = require(NGINX_PATHS, "nginx")?;
        let mut dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("www")).unwrap();
        std::fs::create_dir(dir.path().join("tmp")).unwrap();
        // The port may be taken between free_port() and nginx's bind: try a few.
        for _ in 0..5 {
            let port = free_port();
            write_conf(dir.path(), port, cfg);
            let child = Command::new(&bin)
                .arg("-p")
                .arg(dir.path())
                .arg("-e")
                .arg(dir.path().join("error.log"))
                .arg("-c")
                .arg(dir.path().join("nginx.conf"))
                .args(["-g", "daemon off;"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let mut n = Nginx {
                child,
                dir,
                port,
                https: cfg.tls.is_some(),
            };
            if n.wait_ready() {
                return Some(n);
            }
            let log = std::fs::read_to_string(n.dir.path().join("error.log")).unwrap_or_default();
            if !log.contains("Address already in use") {
                panic!("nginx did not start:\n{log}");
            }
            n.stop();
            dir = std::mem::replace(&mut n.dir, tempfile::tempdir().unwrap());
        }
        panic!("nginx found no free port");
    }

    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    fn stop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }

    /// The document root.
    pub fn www(&self) -> PathBuf {
        self.dir.path().join("www")
    }

    /// Copies `file` into the document root as `name`.
    pub fn publish(&self, file: &Path, name: &str) -> PathBuf {
        let dest = self.www().join(name);
        std::fs::copy(file, &dest).unwrap();
        dest
    }

    /// `http(s)://127.0.0.1:PORT/NAME`.
    pub fn url(&self, name: &str) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}/{name}", self.port)
    }

    /// The error log so far (for failure messages).
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
    }
}

fn write_conf(dir: &Path, port: u16, cfg: &NginxConfig) {
    let d = dir.display();
    let tls = match &cfg.tls {
        None => String::new(),
        Some(t) => {
            let mut s = format!(
                "    ssl_certificate {};\n    ssl_certificate_key {};\n",
                t.server_cert.display(),
                t.server_key.display()
            );
            if cfg.verify_client {
                s.push_str(&format!(
                    "    ssl_client_certificate {};\n    ssl_verify_client on;\n",
                    t.ca.display()
                ));
            }
            s
        }
    };
    let ssl = if cfg.tls.is_some() { " ssl" } else { "" };
    // One process (no workers to orphan, no privilege drop), every path inside `dir`.
    let conf = format!(
        "master_process off;\n\
         pid {d}/nginx.pid;\n\
         error_log {d}/error.log info;\n\
         events {{ worker_connections 256; }}\n\
         http {{\n\
         \x20   access_log {d}/access.log;\n\
         \x20   client_body_temp_path {d}/tmp/body;\n\
         \x20   proxy_temp_path {d}/tmp/proxy;\n\
         \x20   fastcgi_temp_path {d}/tmp/fastcgi;\n\
         \x20   uwsgi_temp_path {d}/tmp/uwsgi;\n\
         \x20   scgi_temp_path {d}/tmp/scgi;\n\
         \x20   default_type application/octet-stream;\n\
         \x20   server {{\n\
         \x20   listen 127.0.0.1:{port}{ssl};\n\
         {tls}\
         \x20   root {d}/www;\n\
         \x20   }}\n\
         }}\n"
    );
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
}
