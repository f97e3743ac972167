// Builds the page's other images; the port is the mock server's.
var port = location.port;
var images = [
  "http://pw-cdn.test:" + port + "/cdn.png",                 // listed host
  "http://pw-cdn.test:" + port + "/robots-blocked/x.png",    // disallowed by robots.txt
  "http://pw-unlisted.test:" + port + "/tracker.png",        // not in the policy
  "http://pw-page.test:" + port + "/people/jane.png",        // under an objection
  "http://pw-page.test:" + port + "/user-blocked.png",       // the user's own predicate
  "http://pw-private.test:" + port + "/x.png",               // listed, but resolves to 127.0.0.1
  "http://169.254.169.254/latest/meta-data/",                // cloud metadata (not listed)
  // allowed, but redirects to a host that is not listed
  "http://pw-page.test:" + port + "/_/respond?status=302&h=Location:http://pw-unlisted.test:" + port + "/redirected.png"
];
document.addEventListener("DOMContentLoaded", function () {
  images.forEach(function (src) {
    var img = document.createElement("img");
    img.src = src;
    document.body.appendChild(img);
  });
});
