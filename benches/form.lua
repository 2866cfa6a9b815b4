-- wrk script for the HTML form round trip: POST the iris form with a signed-in session's cookie
-- and CSRF token ($COOKIE, $CSRF), and after each 303 GET the result page it points to.
-- Requests alternate POST, GET, so round trips per second are half of wrk's requests per second.
local cookie = os.getenv("COOKIE")
local csrf = os.getenv("CSRF")
local form = "csrf_token=" .. csrf ..
  "&sepal_length=5.1&sepal_width=3.5&petal_length=1.4&petal_width=0.2"
local pending = {}

request = function()
  local path = table.remove(pending)
  if path then
    return wrk.format("GET", path, { Cookie = cookie })
  end
  return wrk.format("POST", "/models/iris",
    { Cookie = cookie, ["Content-Type"] = "application/x-www-form-urlencoded" }, form)
end

response = function(status, headers, body)
  if status == 303 then
    table.insert(pending, headers["Location"])
  end
end
